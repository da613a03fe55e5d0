import { describe, expect, it } from 'vitest';
import { escapeHtml, html } from './escape.js';

describe('html', () => {
  it('escapes every interpolation, nested templates stay markup', () => {
    const evil = `<script>x("'&")</script>`;
    const out = html`<p title="${evil}">${evil}${[html`<b>${evil}</b>`, 1]}${undefined}${false}</p>`.value;
    const e = '&lt;script&gt;x(&quot;&#39;&amp;&quot;)&lt;/script&gt;';
    expect(out).toBe(`<p title="${e}">${e}<b>${e}</b>1</p>`);
    expect(escapeHtml('a&amp;b')).toBe('a&amp;amp;b');
  });
});
