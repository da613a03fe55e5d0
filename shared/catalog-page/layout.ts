// The page shell: landmarks (banner, main, contentinfo), a skip link, the sign-in state and one
// polite live region that the script uses to say "Copied".
import { html, type Html } from './escape.js';
import type { PageContext } from './model.js';

export const ASSETS_PATH = '/ui/assets';

export function page(ctx: PageContext, title: string, main: Html): string {
  const account = ctx.user
    ? html`<span>Signed in as <strong>${ctx.user}</strong></span>`
    : ctx.canSignIn
      ? html`<a href="/ui/login">Sign in</a><span class="hint"> to see protected repositories</span>`
      : html`<span class="hint">Public repositories</span>`;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · derrick</title>
<link rel="stylesheet" href="${ASSETS_PATH}/app.css">
<script src="${ASSETS_PATH}/app.js" defer></script>
</head>
<body${ctx.static ? html` data-mode="static"` : ''}>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<a class="brand" href="/ui/">derrick</a>
<nav aria-label="Account" class="account">${account}</nav>
</header>
<main id="main" tabindex="-1">
${main}
</main>
<footer class="foot"><p>Registry: <code>${ctx.registryHost}</code></p></footer>
<div id="status" class="visually-hidden" role="status" aria-live="polite"></div>
</body>
</html>
`.value;
}

/** A line of text with its copy button (shown by the script; with JS off the text stays selectable). */
export function copyable(text: string, label: string, shown: string | Html = text): Html {
  return html`<span class="copyable"><code>${shown}</code><button type="button" class="copy" data-copy="${text}" aria-label="${label}" hidden>Copy</button></span>`;
}
