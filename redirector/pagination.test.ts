import { describe, expect, it } from 'vitest';
import { MAX_PAGE, paginate } from './pagination.js';

const tags = ['a', 'b', 'c', 'd', 'e'];

describe('paginate', () => {
  it('returns everything without n, and never a Link', () => {
    expect(paginate(tags, undefined, undefined, '/p')).toEqual({ items: tags });
  });
  it('pages with an exclusive last and a Link while more remain', () => {
    expect(paginate(tags, '2', undefined, '/p')).toEqual({ items: ['a', 'b'], link: '</p?last=b&n=2>; rel="next"' });
    expect(paginate(tags, '2', 'b', '/p')).toEqual({ items: ['c', 'd'], link: '</p?last=d&n=2>; rel="next"' });
    expect(paginate(tags, '2', 'd', '/p')).toEqual({ items: ['e'] });
  });
  it('treats last as a position even when it is not an item', () => {
    expect(paginate(tags, undefined, 'bb', '/p').items).toEqual(['c', 'd', 'e']);
  });
  it('n=0 gives an empty page without a Link; a huge n is clamped', () => {
    expect(paginate(tags, '0', undefined, '/p')).toEqual({ items: [] });
    const many = Array.from({ length: MAX_PAGE + 5 }, (_, i) => String(i).padStart(5, '0'));
    const page = paginate(many, '999999999', undefined, '/p');
    expect(page.items).toHaveLength(MAX_PAGE);
    expect(page.link).toContain(`n=${MAX_PAGE}`);
  });
  it.each(['-1', 'abc', '1.5', ' 2'])('rejects n=%j with PAGINATION_NUMBER_INVALID', (n) => {
    expect(() => paginate(tags, n, undefined, '/p')).toThrow(expect.objectContaining({ code: 'PAGINATION_NUMBER_INVALID', status: 400 }));
  });
});
