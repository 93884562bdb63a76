import type { WasmModule } from './types';

// A glob, not a plain import: the app still builds (and its sign-in works) before
// scripts/build-web has produced the engine, and the module stays a separate, lazy chunk.
const modules = import.meta.glob<WasmModule>('../../wasm/copains_web.js');

export class EngineMissingError extends Error {
  constructor() {
    super('This build of LesCopains has no encryption engine: run scripts/build-web, then reload.');
    this.name = 'EngineMissingError';
  }
}

let loading: Promise<WasmModule> | null = null;

/** Downloads and instantiates the WASM engine once. */
export function loadEngine(): Promise<WasmModule> {
  if (!loading) {
    const load = modules['../../wasm/copains_web.js'];
    if (!load) return Promise.reject(new EngineMissingError());
    loading = load().then(async (mod) => {
      await mod.default();
      return mod;
    });
    loading.catch(() => {
      loading = null;
    });
  }
  return loading;
}
