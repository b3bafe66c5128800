/**
 * How `denbd serve` turns its image options into block nodes of the daemon,
 * as qemu-nbd stacks them: the image (a file named by path with its format
 * named or probed, or an `--image-opts` definition), then `-l` (an internal
 * snapshot, read-only) or `-s` (a temporary qcow2 overlay over the image,
 * deleted on exit), then `-o` (a raw window from an offset), with
 * `--detect-zeroes` on the node that is exported. The exported node is
 * always named {@linkcode EXPORTED_NODE}.
 *
 * @module
 */

import { join } from "node:path";
import { FileNode } from "../block/file.ts";
import { probeFormat } from "../block/probe.ts";
import { createQcow2 } from "../block/qcow2/qcow2-node.ts";
import type { Daemon } from "../daemon/daemon.ts";
import type { BlockdevOptionsValue } from "../daemon/qapi-types.ts";
import { BlockdevOptions } from "../daemon/qapi-types.ts";
import { DenbdError, messageOf } from "../errors.ts";
import { validateInput } from "../qmp/input.ts";
import { parseQemuOpts } from "../qmp/qemu-opts.ts";
import type { JsonValue } from "../qmp/json-value.ts";

/** The name of the node `serve` exports. */
export const EXPORTED_NODE = "disk";

/** Image formats `serve` can export (the drivers of the daemon that read an image). */
export const SERVE_FORMATS = ["raw", "qcow2"] as const;

/** How `serve` opens its image. */
export interface ServeImageOptions {
  /** FILE: a path, or with `imageOpts` a QemuOpts definition of the node. */
  readonly file: string;
  /** FILE is an option string (`--image-opts`). */
  readonly imageOpts: boolean;
  /** -f, or null to probe. */
  readonly format: string | null;
  readonly readOnly: boolean;
  readonly direct: boolean;
  readonly noFlush: boolean;
  readonly discard: "ignore" | "unmap";
  readonly detectZeroes: "off" | "on" | "unmap";
  /** -o: where the export starts in the image. */
  readonly offset: number | undefined;
  /** -s: write to a temporary overlay. */
  readonly snapshot: boolean;
  /** -l: the internal snapshot to export (read-only). */
  readonly loadSnapshot: string | undefined;
}

/** What opening the image left to clean up at exit, and what to tell the user. */
export interface OpenedImage {
  /** The format of the image was probed and found raw (qemu-nbd then warns when writable). */
  readonly probedRaw: boolean;
  /** Remove the temporary overlay of -s, if any. */
  readonly cleanup: () => Promise<void>;
}

/** qemu-nbd's warning (QEMU's raw driver prints it) for a writable image probed as raw. */
export function probedRawWarning(file: string): string {
  return [
    `WARNING: Image format was not specified for '${file}' and probing guessed raw.`,
    "         Automatically detecting the format is dangerous for raw images, " +
    "write operations on block 0 will be restricted.",
    "         Specify the 'raw' format explicitly to remove the restrictions.",
  ].join("\n");
}

/**
 * The node definition `--image-opts` FILE gives: QemuOpts (`file` implied,
 * dotted names nesting), checked as blockdev-add's options with qemu-nbd's
 * prefix on errors; an inline child without a driver is a file.
 */
export function imageOptsDefinition(text: string): BlockdevOptionsValue {
  const fail = (message: string) =>
    new DenbdError("invalid", `Failed to blk_new_open '${text}': ${message}`);
  const parsed = parseQemuOpts(text, { impliedName: "file" });
  const tree: Record<string, JsonValue> = {};
  for (const { name, value } of parsed.opts) setDotted(tree, name.split("."), value);
  defaultFileDrivers(tree);
  try {
    return validateInput(BlockdevOptions, tree, "keyval");
  } catch (error) {
    throw fail(messageOf(error));
  }
}

/** Give every inline `file` child without a driver the file driver, as QEMU's protocol default. */
function defaultFileDrivers(tree: Record<string, JsonValue>): void {
  for (const [key, value] of Object.entries(tree)) {
    if (typeof value !== "object" || value === null || Array.isArray(value)) continue;
    if (key === "file" && !("driver" in value)) value.driver = "file";
    defaultFileDrivers(value);
  }
}

function setDotted(tree: Record<string, JsonValue>, path: string[], value: string): void {
  const [head, ...rest] = path;
  if (rest.length === 0) {
    tree[head] = value;
    return;
  }
  const inner = tree[head];
  const child = typeof inner === "object" && inner !== null && !Array.isArray(inner)
    ? inner as Record<string, JsonValue>
    : {};
  tree[head] = child;
  setDotted(child, rest, value);
}

/**
 * Open the image as the daemon's node {@linkcode EXPORTED_NODE} (with the
 * nodes under it), as qemu-nbd would.
 */
export async function openServeImage(
  daemon: Daemon,
  options: ServeImageOptions,
): Promise<OpenedImage> {
  const base = options.imageOpts
    ? { definition: imageOptsDefinition(options.file), probedRaw: false }
    : await definitionOfPath(options);
  const layers = (options.snapshot ? 1 : 0) + (options.offset !== undefined ? 1 : 0);
  const top = { "detect-zeroes": options.detectZeroes, discard: options.discard } as const;
  const imageName = layers > 0 ? "image" : EXPORTED_NODE;
  try {
    await daemon.blockdevAdd(
      {
        ...base.definition,
        "node-name": imageName,
        ...(options.snapshot && { "read-only": true }),
        ...(layers === 0 && top),
      },
      { probed: base.probedRaw, loadSnapshot: options.loadSnapshot },
    );
  } catch (error) {
    if (!options.imageOpts) throw error;
    throw new DenbdError(
      "invalid",
      `Failed to blk_new_open '${options.file}': ${messageOf(error)}`,
    );
  }
  let below = imageName;
  let cleanup = () => Promise.resolve();
  if (options.snapshot) {
    const overlay = await createOverlay(daemon, below);
    cleanup = overlay.remove;
    below = options.offset !== undefined ? "overlay" : EXPORTED_NODE;
    await daemon.blockdevAdd({
      driver: "qcow2",
      "node-name": below,
      file: { driver: "file", filename: overlay.path },
      backing: imageName,
      ...(options.offset === undefined && top),
    });
  }
  if (options.offset !== undefined) {
    await daemon.blockdevAdd({
      driver: "raw",
      "node-name": EXPORTED_NODE,
      file: below,
      offset: options.offset,
      "read-only": options.readOnly,
      ...top,
    });
  }
  return { probedRaw: base.probedRaw, cleanup };
}

/** The node definition of an image given by path, its format named or probed. */
async function definitionOfPath(
  options: ServeImageOptions,
): Promise<{ definition: BlockdevOptionsValue; probedRaw: boolean }> {
  const format = options.format ?? await probeFormat(options.file);
  if (!(SERVE_FORMATS as readonly string[]).includes(format)) {
    const how = options.format
      ? `format '${format}'`
      : `'${options.file}' looks like ${format}, which`;
    throw new DenbdError(
      "not-supported",
      `${how} is not supported yet (supported: ${SERVE_FORMATS.join(", ")}); ` +
        `-f raw exports the file's bytes as they are`,
    );
  }
  if (options.loadSnapshot !== undefined && format !== "qcow2") {
    throw new DenbdError(
      "not-supported",
      `Failed to load snapshot: Block format '${format}' used by device '' does not support ` +
        "temporarily loading internal snapshots",
    );
  }
  // The image under a loaded snapshot or a temporary overlay is only read, as in qemu-nbd.
  const readOnly = options.readOnly || options.loadSnapshot !== undefined || options.snapshot;
  const file = {
    driver: "file",
    filename: options.file,
    "read-only": readOnly,
    cache: { direct: options.direct, "no-flush": options.noFlush },
    discard: options.discard,
  } as const;
  const probedRaw = options.format === null && format === "raw";
  if (format === "raw" && !probedRaw) return { definition: file, probedRaw };
  return {
    definition: {
      driver: format as "raw" | "qcow2",
      "read-only": readOnly,
      cache: file.cache,
      discard: options.discard,
      file,
    },
    probedRaw,
  };
}

/**
 * The temporary overlay of -s: an empty qcow2 image in a new temporary
 * directory, as large as the node `backingNode`, which it names as its
 * backing file (qemu-nbd's temporary snapshot).
 */
async function createOverlay(
  daemon: Daemon,
  backingNode: string,
): Promise<{ path: string; remove: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "denbd-snapshot-" });
  const path = join(dir, "overlay.qcow2");
  const remove = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  try {
    const size = daemon.nodes.get(backingNode)!.node.size;
    await Deno.writeFile(path, new Uint8Array(0), { mode: 0o600 });
    const file = await FileNode.open(path, { growable: true });
    try {
      await createQcow2(file, { size });
      await file.flush();
    } finally {
      await file.close();
    }
    return { path, remove };
  } catch (error) {
    await remove();
    throw error;
  }
}
