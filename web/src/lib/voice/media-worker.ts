/// <reference lib="webworker" />
// The media worker: every RTCRtpScriptTransform of the voice connection runs here, in one
// worker, so that one SFrame counter serves all of this participant's tracks and layers
// (frames under one key never share a nonce). The keys come from the page: this device's own
// (made here; its share goes back to the page to be sealed for the others) and the others'
// (opened by the engine from VOICE_KEY events).

import { emptyStats, transformFrame, type FrameCrypto, type Kind, type Side } from './frames';

interface MediaModule {
  default: () => Promise<unknown>;
  MediaCrypto: new () => FrameCrypto & {
    fresh_key(slot: number, generation: number): string;
    next_generation(): string;
    hold(): void;
    release(): void;
    ratchet(): string;
    share(): string | undefined;
    add_key(share: string): void;
    forget_slot(slot: number): void;
  };
}

type Request =
  | { id: number; type: 'fresh'; slot: number; generation: number }
  | { id: number; type: 'next-generation' }
  | { id: number; type: 'hold' }
  | { id: number; type: 'release' }
  | { id: number; type: 'ratchet' }
  | { id: number; type: 'add'; share: string }
  | { id: number; type: 'forget-slot'; slot: number }
  | { id: number; type: 'stats' };

const modules = import.meta.glob<MediaModule>('../../wasm/copains_media.js');
const stats = emptyStats();
let crypto: InstanceType<MediaModule['MediaCrypto']> | undefined;
const ready: Promise<void> = (async () => {
  const load = modules['../../wasm/copains_media.js'];
  if (!load) throw new Error('no media module: run scripts/build-web');
  const mod = await load();
  await mod.default();
  crypto = new mod.MediaCrypto();
})();

const scope = self as unknown as DedicatedWorkerGlobalScope & {
  onrtctransform: ((event: Event & { transformer: RTCRtpScriptTransformer }) => void) | null;
};

scope.onrtctransform = (event) => {
  const transformer = event.transformer;
  const { side, kind, slot } = transformer.options as { side: Side; kind: Kind; slot?: number };
  const stream = new TransformStream<RTCEncodedAudioFrame | RTCEncodedVideoFrame, RTCEncodedAudioFrame | RTCEncodedVideoFrame>({
    transform(frame, controller) {
      if (transformFrame(crypto, side, kind, frame, stats, slot)) controller.enqueue(frame);
    },
  });
  transformer.readable.pipeThrough(stream).pipeTo(transformer.writable).catch(() => {
    // The track ended or was replaced: nothing to do.
  });
};

scope.onmessage = async (event: MessageEvent<Request>) => {
  const req = event.data;
  try {
    await ready;
    const c = crypto!;
    let result: unknown = null;
    switch (req.type) {
      case 'fresh':
        result = c.fresh_key(req.slot, req.generation);
        break;
      case 'next-generation':
        result = c.next_generation();
        break;
      case 'hold':
        c.hold();
        break;
      case 'release':
        c.release();
        break;
      case 'ratchet':
        result = c.ratchet();
        break;
      case 'add':
        c.add_key(req.share);
        break;
      case 'forget-slot':
        c.forget_slot(req.slot);
        break;
      case 'stats':
        result = stats;
        break;
    }
    scope.postMessage({ id: req.id, ok: true, result });
  } catch (e) {
    scope.postMessage({ id: req.id, ok: false, error: e instanceof Error ? e.message : String(e) });
  }
};
