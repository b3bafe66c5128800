/**
 * Secret data: base64 decoded as GLib's g_base64_decode (called through
 * Deno.dlopen for the comparison) after QEMU's character check, data and
 * file sources, and the UTF-8 check of secrets used as text. The messages
 * were recorded from qemu-storage-daemon 7.2.22 given the same objects.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeBase64LikeQemu, loadSecret, secretText } from "../../src/daemon/secrets.ts";

const glib = Deno.dlopen("libglib-2.0.so.0", {
  g_base64_decode: { parameters: ["buffer", "buffer"], result: "pointer" },
  g_free: { parameters: ["pointer"], result: "void" },
});

/** GLib's decoding of `text`. */
function glibDecode(text: string): Uint8Array {
  const length = new BigUint64Array(1);
  const pointer = glib.symbols.g_base64_decode(
    new TextEncoder().encode(text + "\0"),
    new Uint8Array(length.buffer),
  );
  const count = Number(length[0]);
  const bytes = count === 0 || pointer === null
    ? new Uint8Array()
    : new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, count).slice(0));
  glib.symbols.g_free(pointer);
  return bytes;
}

/** denbd's refusal of encrypted secrets. */
const ENCRYPTED = "encrypted secrets (keyid) are not supported by denbd yet";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

Deno.test("base64: what qsd accepts and what it makes of it", () => {
  assert.equal(text(decodeBase64LikeQemu("aGVsbG8=")), "hello");
  assert.equal(text(decodeBase64LikeQemu("aGVsbG8=\n")), "hello");
  assert.equal(text(decodeBase64LikeQemu("aGVs\nbG8=")), "hello");
  assert.equal(text(decodeBase64LikeQemu("aGVsbG8==")), "hello");
  assert.equal(text(decodeBase64LikeQemu("aGVsbG8")), "hel");
  assert.equal(text(decodeBase64LikeQemu("")), "");
  assert.deepEqual(decodeBase64LikeQemu("////"), new Uint8Array([255, 255, 255]));
});

Deno.test("base64: qsd's refusals", () => {
  for (const data of ["a$b", "aGVs bG8=", "aGVsbG8=\r\n", "aGVs-bG8", "é"]) {
    assert.throws(() => decodeBase64LikeQemu(data), {
      message: "Base64 data contains invalid characters",
    }, data);
  }
  assert.throws(() => decodeBase64LikeQemu(new Uint8Array([0x61, 0, 0x62])), {
    message: "Base64 data contains embedded NUL characters",
  });
});

Deno.test("base64: random accepted data decodes as GLib's does", () => {
  let state = 0x2545f491;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const alphabet = "ABCxyz019+/===\n\n";
  for (let i = 0; i < 5000; i++) {
    const data = Array.from(
      { length: Math.floor(next() * 24) },
      () => alphabet[Math.floor(next() * alphabet.length)],
    ).join("");
    assert.deepEqual(decodeBase64LikeQemu(data), glibDecode(data), JSON.stringify(data));
  }
  // Well-formed base64 of random bytes round-trips.
  for (let i = 0; i < 200; i++) {
    const bytes = Uint8Array.from({ length: i }, () => Math.floor(next() * 256));
    const encoded = btoa(String.fromCharCode(...bytes));
    assert.deepEqual(decodeBase64LikeQemu(encoded), bytes);
  }
});

Deno.test("secrets: data or file, raw or base64, with qsd's messages", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denbd-secret-" });
  try {
    const raw = join(dir, "raw");
    const encoded = join(dir, "encoded");
    const withNul = join(dir, "nul");
    await Deno.writeFile(raw, new Uint8Array([0xff, 0, 0x41]));
    await Deno.writeTextFile(encoded, "c2VjcmV0\n");
    await Deno.writeFile(withNul, new Uint8Array([0x61, 0, 0x62]));
    assert.deepEqual(await loadSecret({ file: raw }), new Uint8Array([0xff, 0, 0x41]));
    assert.equal(text(await loadSecret({ file: encoded, format: "base64" })), "secret");
    assert.equal(text(await loadSecret({ data: "c2VjcmV0", format: "raw" })), "c2VjcmV0");
    assert.equal(text(await loadSecret({ data: "c2VjcmV0", format: "base64" })), "secret");
    assert.equal(text(await loadSecret({ data: "" })), "");
    const noFile = (name: string) =>
      `Failed to open file \u201c${dir}/${name}\u201d: No such file or directory`;
    const refusals: [Parameters<typeof loadSecret>[0], string][] = [
      [{ data: "x", file: raw }, "'file' and 'data' are mutually exclusive"],
      [{}, "Either 'file' or 'data' must be provided"],
      // Encrypted secrets: refused after the data is read, before base64 is looked at.
      [{ data: "a$b", format: "base64", keyid: "k" }, ENCRYPTED],
      [{ file: join(dir, "none"), keyid: "k" }, `Unable to read ${dir}/none: ${noFile("none")}`],
      [{ file: withNul, format: "base64" }, "Base64 data contains embedded NUL characters"],
      [{ file: join(dir, "none") }, `Unable to read ${dir}/none: ${noFile("none")}`],
      [
        { file: dir },
        `Unable to read ${dir}: Error reading file \u201c${dir}\u201d: Is a directory`,
      ],
    ];
    for (const [source, message] of refusals) {
      await assert.rejects(loadSecret(source), { message }, JSON.stringify(source));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("secrets as text must be UTF-8", () => {
  assert.equal(secretText("s0", new TextEncoder().encode("pässword")), "pässword");
  assert.equal(secretText("s0", new Uint8Array([0xef, 0xbb, 0xbf, 0x41])), "\ufeffA");
  assert.throws(() => secretText("s0", new Uint8Array([0xff])), {
    message: "Data from secret s0 is not valid UTF-8",
  });
});

globalThis.addEventListener("unload", () => glib.close());
