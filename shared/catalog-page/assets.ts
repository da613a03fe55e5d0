// The page's only stylesheet and script, served at /ui/assets/ (live) and written beside the
// static copy. The script only improves what works without it: search filters as you type from
// names.json, copy buttons appear and copy.

/** The pages run only their own script and style, so nothing a page shows can become code. */
export const CATALOG_CSP =
  "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

export const CSS = `:root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--muted:#57606a;--line:#d0d7de;--accent:#0a58ca;--badge:#116329;--code:#f3f4f6}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#9da7b3;--line:#30363d;--accent:#6cb6ff;--badge:#3fb950;--code:#161b22}}
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:var(--bg);padding:4px 8px;z-index:1}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.top{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:baseline;justify-content:space-between;padding:12px 16px;border-bottom:1px solid var(--line)}
.brand{font-weight:700;font-size:1.2rem;text-decoration:none}.hint{color:var(--muted)}
main{max-width:1100px;margin:0 auto;padding:16px}main:focus{outline:none}.foot{max-width:1100px;margin:0 auto;padding:16px;color:var(--muted)}
h1{font-size:1.6rem;margin:.2em 0 .5em;overflow-wrap:anywhere}h2{font-size:1.2rem;margin-top:1.5em}
code{font:14px/1.4 ui-monospace,monospace;background:var(--code);padding:1px 4px;border-radius:4px;overflow-wrap:anywhere}
.search{display:flex;flex-wrap:wrap;gap:8px;align-items:center}.search label{font-weight:600;width:100%}
.search input{flex:1;min-width:0;font:inherit;padding:8px;border:1px solid var(--muted);border-radius:6px;background:var(--bg);color:var(--fg)}
button{font:inherit;padding:6px 12px;border:1px solid var(--muted);border-radius:6px;background:var(--code);color:var(--fg);cursor:pointer}
.count{color:var(--muted)}.repos{list-style:none;padding:0;margin:0;columns:2 320px}.repos li{padding:4px 0;break-inside:avoid;overflow-wrap:anywhere}
.pager{display:flex;gap:16px;align-items:center;margin:16px 0}
.copyable{display:inline-flex;flex-wrap:wrap;gap:6px;align-items:center;max-width:100%}.copy{padding:2px 8px;font-size:.85rem}
.pull{list-style:none;padding:0;margin:8px 0}.pull li{display:flex;gap:8px;align-items:baseline;margin:4px 0}.client{min-width:4.5em;color:var(--muted)}
table.tags{border-collapse:collapse;width:100%}.tags caption{text-align:left;color:var(--muted);padding-bottom:4px}
.tags th,.tags td{text-align:left;vertical-align:top;padding:8px;border-top:1px solid var(--line)}.tags tr.more td{border-top:none;padding-top:0}
.platforms{list-style:none;padding:0;margin:0}.size{color:var(--muted)}
.badge{display:inline-block;font-size:.75rem;padding:0 6px;border-radius:10px;border:1px solid var(--badge);color:var(--badge)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
@media (max-width:640px){.tags thead{position:absolute;left:-999px}.tags tr,.tags td,.tags th{display:block}
.tags td[data-label]::before{content:attr(data-label) ": ";color:var(--muted)}.tags tr.more td{padding-bottom:16px}.repos{columns:1}}
`;

export const JS = `(function(){
var status=document.getElementById('status');
function say(t){if(status){status.textContent='';setTimeout(function(){status.textContent=t},30)}}
function selectText(el){var r=document.createRange();r.selectNodeContents(el);var s=getSelection();s.removeAllRanges();s.addRange(r)}
document.querySelectorAll('button.copy').forEach(function(b){b.hidden=false;b.addEventListener('click',function(){
var text=b.getAttribute('data-copy'),code=b.parentNode.querySelector('code');selectText(code);
var done=function(){b.textContent='Copied';say('Copied '+text);setTimeout(function(){b.textContent='Copy'},1500)};
if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(text).then(done,function(){document.execCommand('copy');done()})}else{document.execCommand('copy');done()}})});
var q=document.getElementById('q'),list=document.getElementById('repos'),count=document.getElementById('count');
if(!q||!list)return;var names=null,pager=document.querySelector('.pager'),first=list.innerHTML,firstCount=count.textContent;
function href(n){return '/ui/r/'+n.split('/').map(encodeURIComponent).join('/')+'/'}
function show(){var t=q.value.trim().toLowerCase();
if(!t&&!new URLSearchParams(location.search).get('q')){list.innerHTML=first;count.textContent=firstCount;if(pager)pager.hidden=false;return}
var m=names.filter(function(n){return n.indexOf(t)>=0});list.textContent='';
m.slice(0,100).forEach(function(n){var li=document.createElement('li'),a=document.createElement('a');a.href=href(n);a.textContent=n;li.appendChild(a);list.appendChild(li)});
count.textContent=(t?m.length+' of the repositories match \\u201c'+q.value.trim()+'\\u201d':m.length+' repositories')+(m.length>100?' (first 100 shown; press Enter for every page)':'');
if(pager)pager.hidden=true;var u=new URL(location.href);if(t)u.searchParams.set('q',q.value.trim());else u.searchParams.delete('q');history.replaceState(null,'',u)}
var loading=null;function load(){loading=loading||fetch(q.getAttribute('data-names'),{credentials:'same-origin'}).then(function(r){if(!r.ok)throw new Error(r.status);return r.json()}).then(function(j){names=j.repositories});return loading}
q.addEventListener('input',function(){load().then(show,function(){loading=null})});
if(document.body.getAttribute('data-mode')==='static'&&q.value)load().then(show);
})();
`;
