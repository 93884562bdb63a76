// What the media worker does to each encoded frame, apart from the worker itself (so that
// it can be tested without one): encrypt before the packetizer on the sending side, decrypt
// after the depacketizer on the receiving side. A frame without a key, or one that does not
// open, is dropped: nothing unencrypted leaves, nothing unreadable is played.

/** The SFrame operations of the media module (`copains_media`'s `MediaCrypto`). */
export interface FrameCrypto {
  encrypt(frame: Uint8Array, audio: boolean): Uint8Array | undefined;
  decrypt(data: Uint8Array, audio: boolean): Uint8Array | undefined;
  last_slot(): number;
}

export type Side = 'send' | 'recv';
export type Kind = 'audio' | 'video';

/** Counts kept by the worker (the voice panel shows them; the browser tests read them). */
export interface FrameStats {
  sent: Record<Kind, number>;
  /** Frames not sent: no key yet. */
  unsent: Record<Kind, number>;
  opened: Record<Kind, number>;
  /** Frames that did not open (wrong or missing key, damaged). */
  failed: Record<Kind, number>;
  /** Frames opened per sender slot (the key that opened them names the sender). */
  bySlot: Record<number, number>;
}

export function emptyStats(): FrameStats {
  return {
    sent: { audio: 0, video: 0 },
    unsent: { audio: 0, video: 0 },
    opened: { audio: 0, video: 0 },
    failed: { audio: 0, video: 0 },
    bySlot: {},
  };
}

/** A frame as an encoded transform gives it (its `data` is replaced in place). */
export interface EncodedFrame {
  data: ArrayBuffer;
}

/**
 * Transforms one frame. Returns false when the frame must be dropped (not enqueued).
 * `crypto` is undefined while the module loads: the frame is dropped then too. On the
 * receiving side, `slot` is the sender this track was announced for: a frame that opens with
 * another participant's key is dropped, so a track shown as someone's carries only what their
 * key sealed (the server cannot play one person's media under another's name).
 */
export function transformFrame(
  crypto: FrameCrypto | undefined,
  side: Side,
  kind: Kind,
  frame: EncodedFrame,
  stats: FrameStats,
  slot?: number,
): boolean {
  const audio = kind === 'audio';
  const data = new Uint8Array(frame.data);
  if (data.byteLength === 0) return true; // nothing to hide (a DTX gap)
  if (side === 'send') {
    const sealed = crypto?.encrypt(data, audio);
    if (!sealed) {
      stats.unsent[kind] += 1;
      return false;
    }
    frame.data = copy(sealed);
    stats.sent[kind] += 1;
    return true;
  }
  const opened = crypto?.decrypt(data, audio);
  if (!opened) {
    stats.failed[kind] += 1;
    return false;
  }
  const from = crypto!.last_slot();
  if (slot !== undefined && from !== slot) {
    stats.failed[kind] += 1;
    return false;
  }
  frame.data = copy(opened);
  stats.opened[kind] += 1;
  stats.bySlot[from] = (stats.bySlot[from] ?? 0) + 1;
  return true;
}

function copy(bytes: Uint8Array): ArrayBuffer {
  const out = new ArrayBuffer(bytes.byteLength);
  new Uint8Array(out).set(bytes);
  return out;
}
