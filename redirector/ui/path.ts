// Which request targets are the catalog page's: kept apart from handler.ts so that serve can
// route without loading the page's code before its first page request.

export function isUiPath(target: string): boolean {
  return target === '/' || target.startsWith('/?') || target === '/ui' || target.startsWith('/ui/') || target.startsWith('/ui?');
}
