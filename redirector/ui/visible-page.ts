// One page of the repo list for a caller, learning only what that page needs. Signed in, every
// name is visible: a slice of the names. Anonymous, a name's protection may be unknown until its
// entry's head is read, so the names matching the search are checked in chunks, in order, until
// the page and one name past it are found: the first page of a cold 10,000-repo catalog reads a
// few hundred heads, not ten thousand. The count is exact once every name's protection is known.
import { PAGE_SIZE } from '../../shared/catalog-page/model.js';
import { matchNames, pageOf } from '../../shared/catalog-page/paging.js';
import type { RepoIndex } from '../index.js';

const CHUNK = 256;

export interface VisiblePage {
  names: string[];
  page: number;
  /** Exact when `exact`; otherwise a lower bound (there are more). */
  total: number;
  pages: number;
  exact: boolean;
}

export async function visiblePage(index: RepoIndex, authed: boolean, query: string, page: number): Promise<VisiblePage> {
  if (authed) {
    const matched = matchNames(await index.visibleNames(true), query);
    return { ...pageOf(matched, page), total: matched.length, exact: true };
  }
  const candidates = matchNames(index.names(), query);
  const want = Math.max(1, Math.floor(page) || 1);
  const visible: string[] = [];
  let checked = 0;
  while (checked < candidates.length) {
    // Chunks whose protection is known answer at once and keep the count exact; a chunk that
    // needs reads is awaited only while the page still lacks names (its reads start either way).
    const chunk = index.visibleNames(false, candidates.slice(checked, checked + CHUNK));
    if (chunk instanceof Promise && visible.length > want * PAGE_SIZE) break;
    visible.push(...(await chunk));
    checked += CHUNK;
  }
  const exact = checked >= candidates.length;
  const p = pageOf(visible, want);
  // More may follow: offer the next page without counting them.
  return exact ? { ...p, total: visible.length, exact } : { ...p, total: visible.length, pages: p.page + 1, exact };
}
