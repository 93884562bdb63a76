// Fails the build if index.html has anything the server's Content-Security-Policy would block:
// inline scripts, inline styles, or resources from another origin.
// Usage: node scripts/check-csp.mjs <dir>
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

const dir = process.argv[2] ?? 'dist';
const html = await readFile(join(dir, 'index.html'), 'utf8');
const problems = [];
for (const tag of html.match(/<script\b[^>]*>/gi) ?? []) {
  if (!/\bsrc=/.test(tag)) problems.push(`inline script: ${tag}`);
}
if (/<style\b/i.test(html)) problems.push('inline <style> element');
if (/\sstyle=/i.test(html)) problems.push('inline style attribute');
if (/\son[a-z]+=/i.test(html)) problems.push('inline event handler attribute');
for (const m of html.matchAll(/\b(?:src|href)="([^"]+)"/gi)) {
  if (/^(?:[a-z]+:)?\/\//i.test(m[1])) problems.push(`resource from another origin: ${m[1]}`);
}
if (problems.length > 0) {
  console.error(`index.html breaks the Content-Security-Policy:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('index.html: no inline script or style, nothing from another origin');
