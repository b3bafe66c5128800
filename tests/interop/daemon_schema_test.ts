/**
 * query-qmp-schema of `denbd daemon` against qemu-storage-daemon 7.2's: every
 * command denbd offers is described, every type it refers to is defined, and
 * each command's arguments (members, optionality, union cases and their
 * members) are qsd's, save denbd's documented extensions and the union cases
 * denbd does not model. Commands named `x-denbd-...` are denbd's own.
 */

import assert from "node:assert/strict";
import { needs } from "./harness.ts";
import {
  type DaemonKind,
  type DaemonPair,
  type Json,
  qmp,
  withDaemonPair,
} from "./daemon_harness.ts";

/** Members and union cases denbd has and qsd 7.2 lacks, on purpose (docs/compatibility.md). */
const EXTENSIONS = new Set([
  "nbd-server-start.handshake-max-seconds",
  "object-add.case:authz-list-file",
]);

type Schema = Map<string, Json>;

async function schemaOf(pair: DaemonPair, kind: DaemonKind): Promise<Schema> {
  const transcript = await pair.only(kind, qmp("query-qmp-schema"));
  const reply = transcript.at(-1) as { return: Json[] };
  return new Map(reply.return.map((entry) => [entry.name as string, entry]));
}

/** Each member (`name: required|optional`) and union case of the object `type`, one level deep. */
function argumentShape(schema: Schema, type: string): Map<string, string> {
  const shape = new Map<string, string>();
  const entry = schema.get(type)!;
  for (const item of (entry.members ?? []) as Json[]) {
    shape.set(item.name as string, "default" in item ? "optional" : "required");
  }
  for (const variant of (entry.variants ?? []) as Json[]) {
    const members = (schema.get(variant.type as string)!.members ?? []) as Json[];
    shape.set(
      `case:${variant.case}`,
      members.map((item) => `${item.name}${"default" in item ? "?" : ""}`).sort().join(","),
    );
  }
  return shape;
}

Deno.test(
  "query-qmp-schema: denbd's commands are described, and their arguments are qsd's",
  needs("qemu-storage-daemon"),
  async () => {
    await withDaemonPair({ args: [] }, async (pair) => {
      const qsd = await schemaOf(pair, "qsd");
      const ours = await schemaOf(pair, "denbd");
      const commands = (await pair.only("denbd", qmp("query-commands"))).at(-1) as {
        return: { name: string }[];
      };
      for (const { name } of commands.return) {
        assert.equal(ours.get(name)?.["meta-type"], "command", `${name} is described`);
      }
      for (const entry of ours.values()) {
        for (const key of ["arg-type", "ret-type", "element-type"]) {
          const name = entry[key];
          if (typeof name === "string") assert.ok(ours.has(name), `${name} is defined`);
        }
      }
      const differences: string[] = [];
      let compared = 0;
      for (const [name, entry] of ours) {
        const theirs = qsd.get(name);
        if (!["command", "event"].includes(entry["meta-type"] as string)) continue;
        if (name.startsWith("x-denbd-")) continue;
        assert.ok(theirs, `${name} is one of qsd's`);
        const mine = argumentShape(ours, entry["arg-type"] as string);
        const reference = argumentShape(qsd, theirs["arg-type"] as string);
        for (const [key, value] of mine) {
          if (EXTENSIONS.has(`${name}.${key}`)) continue;
          compared++;
          if (reference.get(key) !== value) {
            differences.push(`${name}.${key}: denbd ${value}, qsd ${reference.get(key)}`);
          }
        }
      }
      assert.deepEqual(differences, []);
      assert.ok(compared > 50, `compared ${compared} members`);
      assert.deepEqual(
        ours.get("query-qmp-schema"),
        { ...qsd.get("query-qmp-schema"), "ret-type": ours.get("query-qmp-schema")!["ret-type"] },
      );
    });
  },
);
