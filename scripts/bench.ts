// `npm run bench`: every figure is printed next to a baseline measured in the same run.
import { formatBytes } from '../shared/units.js';
import { benchPublish } from './bench/publish.js';
import { benchPublishMany, formatPublishMany } from './bench/publish-many.js';
import { benchPullThrough, formatPullThrough } from './bench/pull-through.js';
import { benchServe } from './bench/serve.js';
import { benchCatalog, formatCatalog } from './bench/catalog.js';
import { benchStartup, formatStartup } from './bench/startup.js';
import { benchPush, formatPush } from './bench/push.js';
import { benchWorkers, formatWorkers } from './bench/workers.js';

const only = process.argv[2];
const fmt = (n: number) => n.toFixed(n >= 100 ? 0 : 2);

if (!only || only === 'publish') {
  const p = await benchPublish();
  console.log('publish (real CLI runs, median of 5)');
  console.log(`  incremental publish, ${p.tags} tags, one added: ${fmt(p.incrementalMs)} ms`);
  console.log(`  one-tag publish (baseline):                     ${fmt(p.oneTagMs)} ms`);
  console.log(`  ratio: ${p.ratio.toFixed(2)}x  (goal <= 2x)  ${p.ratio <= 2 ? 'OK' : 'MISSED'}`);
  console.log(`  blob bytes copied into the master: ${formatBytes(p.copiedBytes)} of ${p.blobFiles} blobs (goal 0)  ${p.copiedBytes === 0 ? 'OK' : 'MISSED'}`);
}
if (!only || only === 'publish-many') {
  console.log(formatPublishMany(await benchPublishMany()));
}
if (!only || only === 'serve') {
  const s = await benchServe();
  console.log(`serve (one derrick serve process, ${s.tool}, 32 connections, median of 5 interleaved 3 s runs)`);
  console.log(`  raw node:http 302 (baseline): ${fmt(s.rawRps)} req/s`);
  console.log(`  blob GET -> 307:               ${fmt(s.blobRps)} req/s  ratio ${s.blobRatio.toFixed(2)}x (goal >= 0.8x)  ${s.blobRatio >= 0.8 ? 'OK' : 'MISSED'}`);
  console.log(`  manifest GET (inline):         ${fmt(s.manifestRps)} req/s  ratio ${(s.manifestRps / s.rawRps).toFixed(2)}x`);
  console.log(`  errors: ${s.errors}`);
  console.log(`  reload, app swap -> served (${s.reloads} publishes): p50 ${fmt(s.reloadP50Ms)} ms, p99 ${fmt(s.reloadP99Ms)} ms (goal p99 <= 50 ms)  ${s.reloadP99Ms <= 50 ? 'OK' : 'MISSED'}`);
}
if (!only || only === 'catalog') {
  console.log(formatCatalog(await benchCatalog()));
}
if (!only || only === 'pull-through') {
  console.log(formatPullThrough(await benchPullThrough()));
}
if (!only || only === 'startup') {
  console.log(formatStartup(await benchStartup()));
}
if (!only || only === 'push') {
  console.log(formatPush(await benchPush()));
}
if (!only || only === 'workers') {
  console.log(formatWorkers(await benchWorkers()));
}
