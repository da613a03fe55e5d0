// One repo: when it was published, how to pull it, and each tag's digest, kind, platforms, size,
// signature badge and annotations. The default tag's pull lines are open; the others fold.
import { html, type Html } from './escape.js';
import { shortDigest, sizeText, timeText } from './format.js';
import { copyable, page } from './layout.js';
import type { PageContext, RepoView, TagRow } from './model.js';
import { pullLines } from './pull-lines.js';

function pullBlock(ctx: PageContext, name: string, ref: string, what: string): Html {
  return html`<ul class="pull">${pullLines(ctx.registryHost, name, ref, ctx.plainHttp).map(
    (p) => html`<li><span class="client">${p.client}</span>${copyable(p.line, `Copy the ${p.client} pull line for ${what}`)}</li>`,
  )}</ul>`;
}

function annotations(a: Record<string, string>): Html | '' {
  const keys = Object.keys(a).sort();
  if (!keys.length) return '';
  return html`<details class="annotations"><summary>Annotations (${keys.length})</summary><dl>${keys.map((k) => html`<dt>${k}</dt><dd>${a[k]}</dd>`)}</dl></details>`;
}

function platforms(t: TagRow): Html | string {
  if (!t.platforms.length) return t.kind === 'artifact' ? '—' : 'unknown';
  return html`<ul class="platforms">${t.platforms.map((p) => html`<li><span class="platform">${p.platform}</span> <span class="size">${sizeText(p.size)}</span></li>`)}</ul>`;
}

function tagRow(ctx: PageContext, name: string, t: TagRow, open: boolean): Html {
  return html`<tr id="tag-${t.tag}" data-tag="${t.tag}">
<th scope="row" data-label="Tag"><span class="tag">${t.tag}</span>${t.signed ? html` <span class="badge signed" title="Has signatures">signed</span>` : ''}</th>
<td data-label="Digest">${copyable(t.digest, `Copy the digest of ${t.tag}`, shortDigest(t.digest))}</td>
<td data-label="Type"><span class="kind" title="${t.mediaType}">${t.kind}</span></td>
<td data-label="Platforms">${platforms(t)}</td>
<td data-label="Size" class="total">${sizeText(t.size)}</td>
</tr>
<tr class="more"><td colspan="5"><details${open ? html` open` : ''}><summary>Pull ${t.tag}</summary>${pullBlock(ctx, name, `:${t.tag}`, t.tag)}</details>${annotations(t.annotations)}</td></tr>`;
}

function defaultTag(tags: TagRow[]): string | undefined {
  return tags.find((t) => t.tag === 'latest')?.tag ?? tags[0]?.tag;
}

export function repoPage(ctx: PageContext, r: RepoView): string {
  const open = defaultTag(r.tags);
  const route = r.route
    ? html`<section aria-labelledby="route-h" class="route"><h2 id="route-h">Pull-through cache</h2>
<p>Cached from <code>${r.route.upstream}</code>, repository <code>${r.route.upstreamRepo}</code>. The tags below are cached; any other upstream tag pulls through on demand:</p>
${pullBlock(ctx, r.name, ':<tag>', 'any upstream tag')}</section>`
    : '';
  const crane = r.crane
    ? html`<p class="crane">Served from crane data: repository <code>${r.crane.repository}</code>, files at <code>${r.crane.url}</code>. Its tags are in that tree's <code>tags/list</code>.</p>
${pullBlock(ctx, r.name, ':<tag>', 'a tag')}`
    : '';
  const tags = r.tags.length
    ? html`<table class="tags"><caption>Tags of ${r.name}</caption>
<thead><tr><th scope="col">Tag</th><th scope="col">Digest</th><th scope="col">Type</th><th scope="col">Platforms</th><th scope="col">Size</th></tr></thead>
<tbody>${r.tags.map((t) => tagRow(ctx, r.name, t, t.tag === open))}</tbody></table>`
    : r.crane
      ? ''
      : html`<p>No tags${r.route ? ' cached yet' : ''}.</p>`;
  return page(
    ctx,
    r.name,
    html`<nav aria-label="Breadcrumb" class="crumbs"><a href="/ui/">Repositories</a> / <span aria-current="page">${r.name}</span></nav>
<h1 class="repo-name">${r.name}</h1>
${r.published ? html`<p class="published">Published <time datetime="${r.published}">${timeText(r.published)}</time></p>` : ''}
${route}${crane}
<section aria-labelledby="tags-h"><h2 id="tags-h">Tags</h2>
${tags}</section>`,
  );
}

export function notFoundPage(ctx: PageContext, name: string): string {
  const hint = ctx.user || !ctx.canSignIn ? '' : html` If it is protected, <a href="/ui/login">sign in</a>.`;
  return page(ctx, 'Not found', html`<h1>Not found</h1><p>No repository named <code>${name}</code> is visible here.${hint}</p><p><a href="/ui/">All repositories</a></p>`);
}
