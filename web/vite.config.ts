import { defineConfig } from 'vitest/config';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// During `npm run dev`, the API and the gateway come from a `copains serve` on this address.
const backend = process.env.COPAINS_DEV_BACKEND ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [svelte()],
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    target: 'es2022',
    // The CSP allows no inline script: keep Vite from inlining anything into index.html.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    cssCodeSplit: true,
    sourcemap: false,
    reportCompressedSize: true,
  },
  // The media worker is a module worker (it imports the SFrame WebAssembly module).
  worker: { format: 'es' },
  server: {
    proxy: {
      '/api': backend,
      '/readyz': backend,
      '/gateway': { target: backend.replace(/^http/, 'ws'), ws: true },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
  resolve: process.env.VITEST ? { conditions: ['browser'] } : undefined,
});
