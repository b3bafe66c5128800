/**
 * Which unexpected member QEMU names: each case is the member order of
 * block-dirty-bitmap-add arguments sent to qsd 7.2 (node and name are its
 * members, the rest unexpected) and the member qsd named in its reply.
 */

import assert from "node:assert/strict";
import { firstRemaining } from "../../src/qmp/ghash-order.ts";
import { qdictKeys } from "../../src/qmp/json-value.ts";

const OBSERVED: [string[], string][] = [
  [["node", "x", "y", "name"], "y"],
  [["ryoo", "node", "sgfzq", "name"], "sgfzq"],
  [["ubtmou", "node", "ecr", "o", "name"], "ecr"],
  [["pav", "cbbgh", "name", "node", "-gqhu", "ayoko", "o"], "-gqhu"],
  [["mwmn", "name", "node", "j", "acs", "cava", "gb", "m", "yhq"], "mwmn"],
  [["nu", "goqgx", "e", "wd", "zpfv", "any", "name", "dmng", "b", "node"], "b"],
  [["y", "node", "k-jmc", "lto", "at", "e", "c", "name", "su", "oi", "sp"], "k-jmc"],
  [[
    "acinoh",
    "node",
    "b",
    "in-t",
    "d",
    "jqfx",
    "ttcigg",
    "gfxurg",
    "name",
    "pr",
    "e",
    "hxw",
    "q",
    "mptcnb",
  ], "ttcigg"],
  [
    "q i bat xwezkl c cnza baplw xkmx rlxb name cc ajtcp msat satv u sooo-r cpcxjk v node"
      .split(" "),
    "xwezkl",
  ],
  [
    ("okc-b isljuz auemo gg-pif uuzlc hcnxme ay u hye vop i sk node uqpv gm rsuq do km w-- " +
      "l-bw hi ayprwb name igunzz ee o ogua tbv ig-n tyfmz rwq").split(" "),
    "do",
  ],
];

Deno.test("the member qsd names as unexpected, for tables small and resized", () => {
  for (const [order, expected] of OBSERVED) {
    const keys = qdictKeys(Object.fromEntries(order.map((key) => [key, 1])));
    assert.equal(firstRemaining(keys, ["node", "name"]), expected, order.join(","));
  }
});

Deno.test("nothing remains when every key was visited", () => {
  assert.equal(firstRemaining(["a", "b"], ["b", "a"]), undefined);
  assert.equal(firstRemaining([], []), undefined);
});
