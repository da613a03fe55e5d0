// The repo list from names alone: filter by the search text, then one page of PAGE_SIZE.
import { PAGE_SIZE } from './model.js';

/** Case-insensitive substring match, the same rule the page's script applies as you type. */
export function matchNames(names: readonly string[], query: string): readonly string[] {
  const q = query.trim().toLowerCase();
  return q ? names.filter((n) => n.includes(q)) : names;
}

export function pageOf(names: readonly string[], page: number): { names: string[]; page: number; pages: number } {
  const pages = Math.max(1, Math.ceil(names.length / PAGE_SIZE));
  const p = Math.min(Math.max(1, Math.floor(page) || 1), pages);
  return { names: names.slice((p - 1) * PAGE_SIZE, p * PAGE_SIZE), page: p, pages };
}
