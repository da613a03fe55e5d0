// One running promise per key: concurrent callers with the same key share it, so a miss
// becomes one upstream request however many clients ask.

export type SingleFlight = <T>(key: string, fn: () => Promise<T>) => Promise<T>;

/** `onJoin` is called each time a caller shares a running flight (a metric). */
export function createSingleFlight(onJoin: () => void = () => {}): SingleFlight {
  const flights = new Map<string, Promise<unknown>>();
  return <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const running = flights.get(key);
    if (running) {
      onJoin();
      return running as Promise<T>;
    }
    const p = fn().finally(() => flights.delete(key));
    flights.set(key, p);
    return p;
  };
}
