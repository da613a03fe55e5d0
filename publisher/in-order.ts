// A bounded pool whose results come out in input order: a run's summary lines follow the order
// of repos in the config, whichever repo finishes first, so cron logs of two runs diff cleanly.

/**
 * Runs `fn` over `items`, at most `limit` at once, and passes each result to `emit` in item
 * order, as soon as it and every earlier one are done. `fn` must not reject: turn a failure into
 * a result, so one item's failure never stops the others.
 */
export async function mapInOrder<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
  emit: (result: R) => void,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  const done: boolean[] = new Array(items.length).fill(false);
  let next = 0;
  let emitted = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
      done[i] = true;
      while (emitted < items.length && done[emitted]) emit(results[emitted++]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}
