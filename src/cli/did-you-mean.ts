/**
 * "Did you mean" for a mistyped name: the known name closest to it by
 * edit distance (insertions, deletions, substitutions and swaps of
 * neighbours), when it is close enough to be a typo.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { closestName, didYouMean } from "./did-you-mean.ts";
 * assert.equal(closestName("srve", ["serve", "list", "info"]), "serve");
 * assert.equal(didYouMean("persistant", ["persistent"], "--"), "; did you mean '--persistent'?");
 * assert.equal(didYouMean("frobnicate", ["serve"]), "");
 * assert.equal(closestName("cpoy", ["copy", "dump"]), "copy");
 * assert.equal(closestName("frobnicate", ["serve", "list"]), undefined);
 * ```
 * @module
 */

/** The candidate closest to `word`, if within a typo's distance (1, or 2 for longer words). */
export function closestName(word: string, candidates: readonly string[]): string | undefined {
  const limit = word.length > 4 ? 2 : 1;
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/**
 * The end of a refusal of `word`: "; did you mean 'PREFIXNAME'?" with the
 * closest of `candidates`, or nothing when none is close.
 */
export function didYouMean(word: string, candidates: readonly string[], prefix = ""): string {
  const near = closestName(word, candidates);
  return near === undefined ? "" : `; did you mean '${prefix}${near}'?`;
}

/** Optimal string alignment distance: edits, with a swap of two neighbours as one edit. */
function editDistance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) rows[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let distance = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        distance = Math.min(distance, rows[i - 2][j - 2] + 1);
      }
      rows[i][j] = distance;
    }
  }
  return rows[a.length][b.length];
}
