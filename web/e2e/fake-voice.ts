/**
 * A voice-like sound for Chromium's fake microphone (`--use-file-for-fake-audio-capture`):
 * a 140 Hz voiced tone with harmonics, its loudness swaying three times a second, so that the
 * browser's noise suppression keeps it and the SFU's audio-level check calls it speech. The
 * default fake microphone only beeps briefly once a second, which is not speaking.
 */

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const RATE = 48_000;
const SECONDS = 4;

export function fakeVoiceFile(): string {
  const path = join(resolve(dirname(fileURLToPath(import.meta.url)), '..', 'test-results'), 'fake-voice.wav');
  if (existsSync(path)) return path;
  const n = RATE * SECONDS;
  const data = Buffer.alloc(44 + n * 2);
  data.write('RIFF', 0);
  data.writeUInt32LE(36 + n * 2, 4);
  data.write('WAVE', 8);
  data.write('fmt ', 12);
  data.writeUInt32LE(16, 16);
  data.writeUInt16LE(1, 20); // PCM
  data.writeUInt16LE(1, 22); // mono
  data.writeUInt32LE(RATE, 24);
  data.writeUInt32LE(RATE * 2, 28);
  data.writeUInt16LE(2, 32);
  data.writeUInt16LE(16, 34);
  data.write('data', 36);
  data.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    const t = i / RATE;
    let v = 0;
    for (let k = 1; k <= 8; k++) v += Math.sin(2 * Math.PI * 140 * k * t + k) / k;
    const envelope = 0.6 + 0.4 * Math.sin(2 * Math.PI * 3 * t);
    data.writeInt16LE(Math.round(Math.max(-1, Math.min(1, (v / 2.7) * envelope * 0.7)) * 32767), 44 + i * 2);
  }
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, data);
  return path;
}
