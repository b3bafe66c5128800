/**
 * The data of `secret` objects as QEMU loads it: inline (`data`) or from a
 * file (`file`), raw or base64. Base64 is checked as QEMU checks it (only
 * the base64 alphabet, `=` and newlines; no NUL) and then decoded as GLib's
 * g_base64_decode decodes it, leniently: newlines are skipped, `=` counts
 * as a zero digit that drops output bytes at the end of its group of four,
 * and a last incomplete group is dropped.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeBase64LikeQemu } from "./secrets.ts";
 * const text = (data: string) => new TextDecoder().decode(decodeBase64LikeQemu(data));
 * assert.equal(text("aGVsbG8="), "hello");
 * assert.equal(text("aGVsbG8"), "hel"); // the incomplete group is dropped, as GLib does
 * assert.throws(() => decodeBase64LikeQemu("aGVs bG8="), /invalid characters/);
 * ```
 * @module
 */

import { DenbdError, messageOf } from "../errors.ts";
import { readFileLikeGlib } from "../glib-file.ts";

/** The base64 digits, each at its value. */
const BASE64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/** The padding character: a digit worth zero that cuts the group's output short. */
const PAD = "=";
/** Characters QEMU lets through but GLib skips. */
const SKIPPED = "\n";

/** The value of each byte as a base64 digit, or -1 for one GLib skips. */
const DIGIT_VALUES: Int8Array = (() => {
  const values = new Int8Array(256).fill(-1);
  for (const [value, digit] of Array.from(BASE64_DIGITS).entries()) {
    values[digit.charCodeAt(0)] = value;
  }
  values[PAD.charCodeAt(0)] = 0;
  return values;
})();

/** Bytes QEMU accepts in base64 data. */
const ALLOWED_BYTES: ReadonlySet<number> = new Set(
  Array.from(BASE64_DIGITS + PAD + SKIPPED, (c) => c.charCodeAt(0)),
);

const encoder = new TextEncoder();

/** Decode base64 `data` (text, or a file's bytes) as QEMU does, with QEMU's messages. */
export function decodeBase64LikeQemu(data: string | Uint8Array): Uint8Array {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  if (bytes.includes(0)) {
    throw new DenbdError("invalid", "Base64 data contains embedded NUL characters");
  }
  if (!bytes.every((byte) => ALLOWED_BYTES.has(byte))) {
    throw new DenbdError("invalid", "Base64 data contains invalid characters");
  }
  const output = new Uint8Array(Math.floor(bytes.length / 4) * 3);
  let length = 0;
  let group = 0;
  let digits = 0;
  // The last two digits seen: whether each was padding.
  let previousPad = false;
  let lastPad = false;
  for (const byte of bytes) {
    const value = DIGIT_VALUES[byte];
    if (value < 0) continue;
    previousPad = lastPad;
    lastPad = byte === PAD.charCodeAt(0);
    group = (group << 6) | value;
    if (++digits < 4) continue;
    output[length++] = group >> 16;
    if (!previousPad) output[length++] = (group >> 8) & 0xff;
    if (!lastPad) output[length++] = group & 0xff;
    group = 0;
    digits = 0;
  }
  return output.slice(0, length);
}

/** A secret's properties (SecretProperties), as given to object-add. */
export interface SecretSource {
  /** The data itself. */
  readonly data?: string;
  /** A file holding the data. */
  readonly file?: string;
  /** How the data is written; "raw" when absent. */
  readonly format?: "raw" | "base64";
  /** The secret that encrypts this one: refused (denbd does not decrypt secrets). */
  readonly keyid?: string;
}

/**
 * Load a secret's bytes from `data` or `file`, decoding base64, with QEMU's
 * messages. An encrypted secret (`keyid`) is refused once its data has been
 * read, where QEMU would start decrypting it.
 */
export async function loadSecret(source: SecretSource): Promise<Uint8Array> {
  const { data, file, format, keyid } = source;
  if (data !== undefined && file !== undefined) {
    throw new DenbdError("invalid", "'file' and 'data' are mutually exclusive");
  }
  let bytes: Uint8Array;
  if (file !== undefined) {
    try {
      bytes = await readFileLikeGlib(file);
    } catch (error) {
      throw new DenbdError("not-found", `Unable to read ${file}: ${messageOf(error)}`);
    }
  } else if (data !== undefined) {
    bytes = encoder.encode(data);
  } else {
    throw new DenbdError("invalid", "Either 'file' or 'data' must be provided");
  }
  if (keyid !== undefined) {
    throw new DenbdError(
      "not-supported",
      "encrypted secrets (keyid) are not supported by denbd yet",
    );
  }
  return format === "base64" ? decodeBase64LikeQemu(bytes) : bytes;
}

/** A secret's bytes as text, refused as QEMU refuses bytes that are not UTF-8. */
export function secretText(id: string, bytes: Uint8Array): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new DenbdError("invalid", `Data from secret ${id} is not valid UTF-8`);
  }
}
