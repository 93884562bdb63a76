// Writes .gz and .br siblings for every built file of 1 KiB or more, so the server can send
// them as they are (Content-Encoding) instead of compressing on each request.
// Usage: node scripts/compress.mjs <dir>
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const MIN_BYTES = 1024;
const SKIP = /\.(gz|br|png|jpe?g|webp|avif|woff2?)$/;

async function* files(dir) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* files(path);
    else if (entry.isFile()) yield path;
  }
}

const root = process.argv[2] ?? 'dist';
let count = 0;
let raw = 0;
let gz = 0;
for await (const path of files(root)) {
  if (SKIP.test(path) || (await stat(path)).size < MIN_BYTES) continue;
  const data = await readFile(path);
  const gzipped = gzipSync(data, { level: 9 });
  const brotli = brotliCompressSync(data, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 11,
      [constants.BROTLI_PARAM_SIZE_HINT]: data.length,
    },
  });
  await writeFile(`${path}.gz`, gzipped);
  await writeFile(`${path}.br`, brotli);
  count += 1;
  raw += data.length;
  gz += gzipped.length;
}
console.log(`compressed ${count} files: ${(raw / 1024).toFixed(1)} KiB → ${(gz / 1024).toFixed(1)} KiB gzip`);
