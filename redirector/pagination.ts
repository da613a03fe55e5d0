// `n` and `last` for tags/list and _catalog, and the Link header for the next page.
import { errors } from '../shared/errors.js';

/** Above this, n is clamped (as distribution does for tags) rather than refused. */
export const MAX_PAGE = 1000;

export interface Page {
  items: string[];
  link?: string;
}

/** Throws PAGINATION_NUMBER_INVALID unless `n` is absent, empty or a non-negative integer. */
export function checkPageSize(n: string | undefined): void {
  if (n !== undefined && n !== '' && !/^\d+$/.test(n)) throw errors.paginationInvalid(n);
}

/** `sorted` must be in ascending (byte) order; `last` is exclusive. */
export function paginate(sorted: string[], n: string | undefined, last: string | undefined, path: string): Page {
  let start = 0;
  if (last !== undefined) {
    // Binary search: the first item greater than `last`.
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid]! <= last) lo = mid + 1;
      else hi = mid;
    }
    start = lo;
  }
  checkPageSize(n);
  if (n === undefined || n === '') return { items: sorted.slice(start) };
  const count = Math.min(Number(n), MAX_PAGE);
  const items = sorted.slice(start, start + count);
  if (count === 0 || start + count >= sorted.length) return { items };
  const next = `${path}?last=${encodeURIComponent(items.at(-1)!)}&n=${count}`;
  return { items, link: `<${next}>; rel="next"` };
}
