/**
 * authz-list globs against the matcher QEMU 7.2 really uses: GLib's
 * g_pattern_match_simple (qemu-storage-daemon 7.2 imports it, not fnmatch),
 * called through Deno.dlopen. Fixed cases say what the rules are; random
 * patterns over a small alphabet (wildcards, bracket and backslash
 * characters, multi-byte characters) compare the two matchers case by case.
 */
import assert from "node:assert/strict";
import { globMatches } from "../../src/authz/glob.ts";

const glib = Deno.dlopen("libglib-2.0.so.0", {
  g_pattern_match_simple: { parameters: ["buffer", "buffer"], result: "i32" },
});

const encoder = new TextEncoder();

/** GLib's answer for `pattern` and `text`. */
function glibMatches(pattern: string, text: string): boolean {
  const cString = (value: string) => encoder.encode(value + "\0");
  return glib.symbols.g_pattern_match_simple(cString(pattern), cString(text)) !== 0;
}

/** [pattern, text, matches]: what the rules are, checked against GLib too. */
const CASES: [string, string, boolean][] = [
  ["CN=alice,O=denbd test,C=GB", "CN=alice,O=denbd test,C=GB", true],
  ["CN=alice", "CN=alice,O=x", false],
  ["CN=*", "CN=alice,O=x", true],
  ["CN=*,O=x", "CN=alice,O=x", true],
  ["*", "", true],
  ["", "", true],
  ["", "a", false],
  ["?", "", false],
  ["?", "é", true],
  ["?", "😀", true],
  ["??", "😀", false],
  ["a*b*c", "aXXbYYc", true],
  ["a*b*c", "aXXbYY", false],
  ["a**b", "ab", true],
  ["*/*", "dir/file", true],
  ["a?c", "a/c", true],
  // No bracket expressions and no escapes: these characters match themselves.
  ["CN=[ab]lice", "CN=alice", false],
  ["CN=[ab]lice", "CN=[ab]lice", true],
  ["[!a]", "b", false],
  ["a\\*", "a\\xyz", true],
  ["a\\*", "a*", false],
  ["\\?", "\\x", true],
  ["*a", "aaaa", true],
  ["*ab", "aab", true],
  ["a*a*a*a*a*b", "a".repeat(40), false],
];

Deno.test("globs: the fixed cases", () => {
  for (const [pattern, text, expected] of CASES) {
    assert.equal(globMatches(pattern, text), expected, `${pattern} ~ ${text}`);
  }
});

Deno.test("globs: the fixed cases are GLib's answers", () => {
  for (const [pattern, text, expected] of CASES) {
    assert.equal(glibMatches(pattern, text), expected, `${pattern} ~ ${text}`);
  }
});

/** A deterministic pseudo-random generator (xorshift32). */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

Deno.test("globs: random patterns match as GLib's do", () => {
  const next = random(0x5eed);
  const pick = (alphabet: readonly string[], length: number) =>
    Array.from({ length }, () => alphabet[Math.floor(next() * alphabet.length)]).join("");
  const textAlphabet = ["a", "b", "/", "[", "]", "\\", "é", "😀", "*", "?"];
  const patternAlphabet = [...textAlphabet, "*", "?", "*", "?", "a", "b"];
  let matched = 0;
  for (let i = 0; i < 20_000; i++) {
    const text = pick(textAlphabet, Math.floor(next() * 8));
    // Half the patterns are made from the text, so that many of them match.
    const pattern = next() < 0.5
      ? Array.from(text).map((c) => next() < 0.3 ? (next() < 0.5 ? "*" : "?") : c).join("")
      : pick(patternAlphabet, Math.floor(next() * 7));
    const expected = glibMatches(pattern, text);
    assert.equal(globMatches(pattern, text), expected, `${pattern} ~ ${text}`);
    if (expected) matched++;
  }
  // Both answers occur often enough for the comparison to mean something.
  assert.ok(matched > 2000 && matched < 18_000, `${matched} matches`);
});

globalThis.addEventListener("unload", () => glib.close());
