// A cost-bounded cache with CLOCK eviction: a hit only sets a flag (no reordering on the hot
// path); eviction walks from the oldest entry and gives recently used ones a second chance.

interface Slot<V> {
  value: V;
  cost: number;
  used: boolean;
}

export interface Lru<K, V> {
  get(key: K): V | undefined;
  /** Without marking it used. */
  peek(key: K): V | undefined;
  set(key: K, value: V, cost: number): void;
  delete(key: K): boolean;
  values(): IterableIterator<V>;
  size(): number;
  cost(): number;
}

/** `bound` is the total cost kept; the newest entry is kept even when it alone is over it. */
export function createLru<K, V>(bound: number, onEvict?: (key: K, value: V) => void): Lru<K, V> {
  const slots = new Map<K, Slot<V>>();
  let total = 0;
  const evict = () => {
    let guard = slots.size * 2 + 2;
    while (total > bound && slots.size > 1 && guard-- > 0) {
      const [key, slot] = slots.entries().next().value as [K, Slot<V>];
      slots.delete(key);
      if (slot.used) {
        slot.used = false;
        slots.set(key, slot);
        continue;
      }
      total -= slot.cost;
      onEvict?.(key, slot.value);
    }
  };
  return {
    get: (key) => {
      const s = slots.get(key);
      if (!s) return undefined;
      s.used = true;
      return s.value;
    },
    peek: (key) => slots.get(key)?.value,
    set: (key, value, cost) => {
      const old = slots.get(key);
      if (old) {
        total -= old.cost;
        slots.delete(key);
      }
      slots.set(key, { value, cost, used: false });
      total += cost;
      if (total > bound) {
        // The new entry goes last and is flagged, so it survives this round.
        slots.get(key)!.used = true;
        evict();
      }
    },
    delete: (key) => {
      const s = slots.get(key);
      if (!s) return false;
      total -= s.cost;
      return slots.delete(key);
    },
    values: function* () {
      for (const s of slots.values()) yield s.value;
    },
    size: () => slots.size,
    cost: () => total,
  };
}
