// The repo list: a GET search form (works with JS off; the script filters as you type), one
// page of names, the pager, and the pull-through routes with how to pull anything through them.
import { html } from './escape.js';
import { pageHref, repoHref } from './format.js';
import { copyable, page } from './layout.js';
import type { ListView, PageContext } from './model.js';
import { pullLines } from './pull-lines.js';

function pager(v: ListView) {
  if (v.pages <= 1) return '';
  const prev = v.page > 1 ? html`<a rel="prev" href="${pageHref(v.page - 1, v.query)}">Previous</a>` : '';
  const next = v.page < v.pages ? html`<a rel="next" href="${pageHref(v.page + 1, v.query)}">Next</a>` : '';
  const of = v.exact === false ? '' : ` of ${v.pages}`;
  return html`<nav class="pager" aria-label="Pages">${prev} <span>Page ${v.page}${of}</span> ${next}</nav>`;
}

function routes(ctx: PageContext, v: ListView) {
  if (!v.routes.length) return '';
  return html`<section aria-labelledby="routes-h">
<h2 id="routes-h">Pull-through routes</h2>
<p>Any repository and tag of these upstreams pulls through derrick, cached on first pull.</p>
<ul class="routes">${v.routes.map((r) => {
    const docker = pullLines(ctx.registryHost, `${r.prefix}/<repository>`, ':<tag>', ctx.plainHttp)[0]!;
    return html`<li><code>${r.prefix}/</code> → <code>${r.upstream}</code><br>${copyable(docker.line, `Copy the docker pull line for ${r.prefix}`)}</li>`;
  })}</ul>
</section>`;
}

export function listPage(ctx: PageContext, v: ListView): string {
  const n = v.exact === false ? `More than ${v.total}` : String(v.total);
  const count = v.query ? `${n} of the repositories match “${v.query}”` : `${n} repositories`;
  return page(
    ctx,
    'Repositories',
    html`<h1>Repositories</h1>
<form class="search" role="search" method="get" action="/ui/">
<label for="q">Search repositories</label>
<input id="q" name="q" type="search" value="${v.query}" autocomplete="off" spellcheck="false" data-names="/ui/names.json">
<button type="submit">Search</button>
</form>
<p id="count" class="count">${count}</p>
<ul id="repos" class="repos">${v.names.map((n) => html`<li><a href="${repoHref(n)}">${n}</a></li>`)}</ul>
${pager(v)}
${routes(ctx, v)}`,
  );
}
