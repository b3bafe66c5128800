/**
 * Hostile qcow2 images at the NBD level: images qemu-img made, with one
 * header field broken (the L1 table beyond the end of the file, the
 * refcount table in the header, a huge L1 size, and others QEMU names), and a
 * backing loop a -> b -> a. `denbd serve`, asked to serve each writable,
 * exits 1 at once with a clear message (QEMU's where QEMU has one), no stack
 * trace, and the files unchanged.
 *
 * With DENBD_SUBJECT=qemu the subject is qemu-nbd, which checks the images:
 * qemu-nbd refuses the cases it has a message for with that message, and
 * serves the two it does not check at open (the L1 table beyond the end, the
 * refcount table in the header) without changing the file; those two are
 * where denbd is stricter than QEMU.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  delay,
  exists,
  needs,
  sha256File,
  SUBJECT_IS_QEMU,
  subjectServeCommand,
  withTempDir,
} from "./harness.ts";
import { qemuIo } from "./qcow2_images.ts";

/** A header field to overwrite: its offset, width and the hostile value. */
interface Patch {
  readonly offset: number;
  readonly bytes: 4 | 8;
  readonly value: bigint;
}

/** One hostile image: how to break it, what the refusal says, whether QEMU checks it at open. */
interface HostileCase {
  readonly name: string;
  readonly patches: readonly Patch[];
  readonly message: RegExp;
  readonly qemuRefuses: boolean;
}

const CASES: readonly HostileCase[] = [
  {
    name: "L1 table beyond the end of the file",
    patches: [{ offset: 40, bytes: 8, value: 1n << 40n }],
    message: /L1/,
    qemuRefuses: false,
  },
  {
    name: "refcount table in the header",
    patches: [{ offset: 48, bytes: 8, value: 0n }],
    message: /[Rr]efcount table|[Rr]eference count table/,
    qemuRefuses: false,
  },
  {
    name: "huge L1 size",
    patches: [{ offset: 36, bytes: 4, value: 0x7fffffffn }],
    message: /Active L1 table too large/,
    qemuRefuses: true,
  },
  {
    name: "misaligned L1 table",
    patches: [{ offset: 40, bytes: 8, value: 0x10001n }],
    message: /Active L1 table offset invalid/,
    qemuRefuses: true,
  },
  {
    name: "huge refcount table",
    patches: [{ offset: 56, bytes: 4, value: 0xffffffffn }],
    message: /Reference count table too large/,
    qemuRefuses: true,
  },
  {
    name: "2 GiB clusters",
    patches: [{ offset: 20, bytes: 4, value: 31n }],
    message: /Unsupported cluster size: 2\^31/,
    qemuRefuses: true,
  },
  {
    name: "header longer than a cluster",
    patches: [{ offset: 100, bytes: 4, value: 0x20000n }],
    message: /qcow2 header exceeds cluster size/,
    qemuRefuses: true,
  },
  {
    name: "backing file name beyond the cluster",
    patches: [{ offset: 8, bytes: 8, value: 1n << 40n }, { offset: 16, bytes: 4, value: 10n }],
    message: /Invalid backing file offset/,
    qemuRefuses: true,
  },
];

/** What became of a server asked to serve an image: its exit, or that it served. */
type Outcome = { exited: true; code: number; stderr: string } | { exited: false };

/** Start the subject writable on `image` and see whether it exits (bounded) or serves. */
async function tryServe(image: string, dir: string): Promise<Outcome> {
  const socket = join(dir, "nbd.sock");
  const [command, prefix] = subjectServeCommand();
  const child = new Deno.Command(command, {
    args: [...prefix, "-f", "qcow2", "-t", "-k", socket, image],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  const deadline = Date.now() + 15_000;
  let exited = false;
  output.then(() => exited = true);
  while (!exited && !(await exists(socket)) && Date.now() < deadline) await delay(50);
  if (!exited) {
    // Serving (or hanging): stop it; a hang shows as a failed expectation of the caller.
    await delay(200);
    if (!exited) {
      child.kill("SIGTERM");
      await output;
      return { exited: false };
    }
  }
  const result = await output;
  return { exited: true, code: result.code, stderr: new TextDecoder().decode(result.stderr) };
}

/** Write `patch` into the file at `path`. */
async function apply(path: string, patch: Patch): Promise<void> {
  const bytes = new Uint8Array(patch.bytes);
  const view = new DataView(bytes.buffer);
  if (patch.bytes === 8) view.setBigUint64(0, patch.value);
  else view.setUint32(0, Number(patch.value));
  const file = await Deno.open(path, { write: true });
  try {
    await file.seek(patch.offset, Deno.SeekMode.Start);
    await file.write(bytes);
  } finally {
    file.close();
  }
}

/** Check a refusal: exit 1, a message matching `message`, no stack trace. */
function assertRefused(outcome: Outcome, message: RegExp, what: string): void {
  assert.ok(outcome.exited, `${what}: served instead of refusing`);
  assert.equal(outcome.code, 1, `${what}: exit code; stderr: ${outcome.stderr}`);
  assert.match(outcome.stderr, message, what);
  assert.doesNotMatch(outcome.stderr, /Uncaught|^\s+at /m, `${what}: a crash, not an error`);
}

for (const hostile of CASES) {
  Deno.test(
    `hostile qcow2 (${hostile.name}): serve exits with a clear error, writes nothing`,
    needs("qemu-img", "qemu-io"),
    async () => {
      await withTempDir(async (dir) => {
        const image = join(dir, "hostile.qcow2");
        await check("qemu-img", ["create", "-q", "-f", "qcow2", image, "8M"]);
        await qemuIo(image, "qcow2", ["write -P 0x55 0 192k"]);
        for (const patch of hostile.patches) await apply(image, patch);
        const before = await sha256File(image);
        const outcome = await tryServe(image, dir);
        if (SUBJECT_IS_QEMU && !hostile.qemuRefuses) {
          assert.deepEqual(outcome, { exited: false }, "qemu-nbd serves it");
        } else {
          assertRefused(outcome, hostile.message, hostile.name);
        }
        assert.equal(await sha256File(image), before, "the image is unchanged");
      });
    },
  );
}

Deno.test(
  "hostile qcow2 (backing loop a -> b -> a): serve exits with a clear error, writes nothing",
  needs("qemu-img"),
  async () => {
    await withTempDir(async (dir) => {
      const [a, b] = [join(dir, "a.qcow2"), join(dir, "b.qcow2")];
      await check("qemu-img", ["create", "-q", "-f", "qcow2", a, "8M"]);
      await check("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b]);
      await check("qemu-img", ["rebase", "-u", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", a]);
      const before = await Promise.all([a, b].map(sha256File));
      assertRefused(await tryServe(a, dir), /backing|loop|lock/i, "backing loop");
      assert.deepEqual(await Promise.all([a, b].map(sha256File)), before, "files unchanged");
    });
  },
);
