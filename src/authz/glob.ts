/**
 * The glob patterns of authz-list rules as QEMU 7.2 matches them: with
 * GLib's g_pattern_match_simple (the qemu-storage-daemon 7.2 binary imports
 * it and not fnmatch; a qsd 7.2 NBD server with the glob rule
 * `C=GB,O=denbd test,CN=[a]lice` denies the client `C=GB,O=denbd test,CN=alice`,
 * which fnmatch would match). `*` matches any run of characters, `/` included;
 * `?` matches exactly one character (a Unicode code point, as GLib's UTF-8
 * matching does); every other character, `[`, `]` and `\` included, matches
 * only itself. There are no bracket expressions and no escapes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { globMatches } from "./glob.ts";
 * assert.ok(globMatches("CN=*,O=denbd test,C=GB", "CN=alice,O=denbd test,C=GB"));
 * assert.ok(!globMatches("CN=[ab]lice", "CN=alice"));
 * ```
 * @module
 */

/** The character that matches any run of characters. */
const ANY_RUN = "*";
/** The character that matches exactly one character. */
const ANY_ONE = "?";

/**
 * Whether `text` matches `pattern` as a whole. Linear backtracking to the
 * last `*` only, so the time is bounded by the product of the lengths
 * whatever the pattern.
 */
export function globMatches(pattern: string, text: string): boolean {
  const wanted = Array.from(pattern);
  const given = Array.from(text);
  let p = 0;
  let t = 0;
  // Where to resume after the last `*`: the pattern after it, and the text it stopped at.
  let starPattern = -1;
  let starText = 0;
  while (t < given.length) {
    if (p < wanted.length && wanted[p] === ANY_RUN) {
      starPattern = ++p;
      starText = t;
    } else if (p < wanted.length && (wanted[p] === ANY_ONE || wanted[p] === given[t])) {
      p++;
      t++;
    } else if (starPattern >= 0) {
      p = starPattern;
      t = ++starText;
    } else {
      return false;
    }
  }
  while (p < wanted.length && wanted[p] === ANY_RUN) p++;
  return p === wanted.length;
}
