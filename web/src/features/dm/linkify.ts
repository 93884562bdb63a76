/** Splits message text into plain parts and web links (http and https only). */

export interface Part {
  text: string;
  href?: string;
}

const URL_PATTERN = /\bhttps?:\/\/[^\s<>"']+/gi;
/** Punctuation that ends a sentence rather than the link. */
const TRAILING = /[.,;:!?'")\]}>]$/;

function count(s: string, c: string): number {
  return s.split(c).length - 1;
}

export function linkify(text: string): Part[] {
  const parts: Part[] = [];
  let last = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    const start = match.index ?? 0;
    let url = match[0];
    while (TRAILING.test(url)) {
      // A closing parenthesis that closes one inside the URL is part of it (Wikipedia's "Foo_(bar)").
      if (url.endsWith(')') && count(url, '(') >= count(url, ')')) break;
      url = url.slice(0, -1);
    }
    let valid = true;
    try {
      const parsed = new URL(url);
      valid = parsed.protocol === 'http:' || parsed.protocol === 'https:';
    } catch {
      valid = false;
    }
    if (!valid) continue;
    if (start > last) parts.push({ text: text.slice(last, start) });
    parts.push({ text: url, href: url });
    last = start + url.length;
  }
  if (last < text.length) parts.push({ text: text.slice(last) });
  return parts;
}
