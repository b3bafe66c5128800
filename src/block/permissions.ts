/**
 * Permissions on nodes, QEMU's model: a user of a node (an export, a
 * parent node, the daemon holding a node it opened) takes permissions on
 * it and says which permissions it shares with other users. The request
 * travels down the graph, each child getting what its parent's role needs;
 * the file node at the bottom turns the sum of its users into QEMU's image
 * lock bytes (`image-lock.ts`), so nothing is locked until a user takes
 * permissions, and a conflict with another process is refused then, with
 * QEMU's message.
 *
 * What a child gets, by default (QEMU's bdrv_default_perms):
 *
 * - a `file` child gets its parent's request unchanged (a filter, raw);
 * - a `backing` child gets consistent read if the parent takes it, and
 *   shares consistent read and write unchanged, plus write and resize only
 *   when the parent shares write (QEMU's bdrv_default_perms_for_cow);
 * - a format that keeps metadata in its file (qcow2) gives its file
 *   {@linkcode storagePermissions} instead, through
 *   {@linkcode ChildPermissionPolicy}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { backingPermissions, WRITABLE_USE } from "./permissions.ts";
 * assert.deepEqual(backingPermissions(WRITABLE_USE), {
 *   take: ["consistent read"],
 *   share: ["consistent read", "write unchanged"],
 * });
 * ```
 * @module
 */

import type { ImageLockRequest, ImagePermission } from "./image-lock.ts";
import type { BlockNode, NodeChild } from "./node.ts";

/** Every permission, in QEMU's bit order. */
export const ALL_PERMISSIONS: readonly ImagePermission[] = [
  "consistent read",
  "write",
  "write unchanged",
  "resize",
];

/** What a user takes on a node and what it lets other users take. */
export interface PermissionRequest {
  /** Permissions the user has while it uses the node. */
  readonly take: readonly ImagePermission[];
  /** Permissions other users may have meanwhile (the rest are refused to them). */
  readonly share: readonly ImagePermission[];
}

/**
 * A writable user as denbd's exports are: reads and writes, and lets
 * others read but neither write nor resize (qemu-nbd shares write; see
 * docs/compatibility.md).
 */
export const WRITABLE_USE: PermissionRequest = {
  take: ["consistent read", "write"],
  share: ["consistent read", "write unchanged"],
};

/** A read-only user, like `qemu-nbd -r`: reads, and lets others do anything but resize. */
export const READ_ONLY_USE: PermissionRequest = {
  take: ["consistent read"],
  share: ["consistent read", "write", "write unchanged"],
};

/** Permissions taken on a node, held until released. */
export interface PermissionGrant {
  /** Give the permissions back (the file underneath updates its locks). Idempotent. */
  release(): void;
}

/** A node that takes permissions itself instead of passing them to its children (a file). */
export interface PermissionHolder {
  /** Take `request` as one more user; throws (kind "busy", QEMU's message) on a conflict. */
  takePermissions(request: PermissionRequest): PermissionGrant;
}

/** A node that decides what its children get (a format node with metadata, such as qcow2). */
export interface ChildPermissionPolicy {
  /** What `child` gets when this node is used with `request`. */
  childPermissions(child: NodeChild, request: PermissionRequest): PermissionRequest;
}

/**
 * Take `request` on `node`: the node itself when it holds permissions (a
 * file), else each of its children with what its role needs (the node's
 * {@linkcode ChildPermissionPolicy} or {@linkcode defaultChildPermissions}).
 * All or nothing: when a child refuses, what the others took is released.
 */
export function takePermissions(node: BlockNode, request: PermissionRequest): PermissionGrant {
  if (isPermissionHolder(node)) return node.takePermissions(request);
  const grants: PermissionGrant[] = [];
  try {
    for (const child of node.children) {
      const childRequest = hasChildPolicy(node)
        ? node.childPermissions(child, request)
        : defaultChildPermissions(child, request);
      grants.push(takePermissions(child.node, childRequest));
    }
  } catch (error) {
    for (const grant of grants) grant.release();
    throw error;
  }
  return {
    release() {
      for (const grant of grants.splice(0)) grant.release();
    },
  };
}

/** What `child` gets by default: the request itself for a `file`, {@linkcode backingPermissions} for a `backing`. */
export function defaultChildPermissions(
  child: NodeChild,
  request: PermissionRequest,
): PermissionRequest {
  return child.role === "backing" ? backingPermissions(request) : request;
}

/**
 * What a backing child gets (QEMU's bdrv_default_perms_for_cow): consistent
 * read when the parent takes it and nothing else; it shares consistent read
 * and write unchanged, and write and resize only if the parent shares write.
 */
export function backingPermissions(request: PermissionRequest): PermissionRequest {
  const sharesWrite = request.share.includes("write");
  return {
    take: request.take.filter((permission) => permission === "consistent read"),
    share: ALL_PERMISSIONS.filter((permission) =>
      permission === "consistent read" || permission === "write unchanged" ||
      (sharesWrite && (permission === "write" || permission === "resize"))
    ),
  };
}

/**
 * What the file of a format with metadata (qcow2) gets (QEMU's
 * bdrv_default_perms_for_storage): consistent read always, write and resize
 * too when the format node is `writable` (it writes metadata and grows the
 * file even when its user only reads), and nobody else may write or resize.
 */
export function storagePermissions(
  request: PermissionRequest,
  writable: boolean,
): PermissionRequest {
  const extra: ImagePermission[] = writable
    ? ["consistent read", "write", "resize"]
    : ["consistent read"];
  return {
    take: ALL_PERMISSIONS.filter((p) => request.take.includes(p) || extra.includes(p)),
    share: request.share.filter((p) => p !== "write" && p !== "resize"),
  };
}

/** The lock bytes of a set of users: every permission one takes, every one one does not share. */
export function lockRequestOf(users: Iterable<PermissionRequest>): ImageLockRequest {
  const holds = new Set<ImagePermission>();
  const unshares = new Set<ImagePermission>();
  for (const user of users) {
    for (const permission of user.take) holds.add(permission);
    for (const permission of ALL_PERMISSIONS) {
      if (!user.share.includes(permission)) unshares.add(permission);
    }
  }
  return {
    holds: ALL_PERMISSIONS.filter((p) => holds.has(p)),
    unshares: ALL_PERMISSIONS.filter((p) => unshares.has(p)),
  };
}

function isPermissionHolder(node: BlockNode): node is BlockNode & PermissionHolder {
  return typeof (node as Partial<PermissionHolder>).takePermissions === "function";
}

function hasChildPolicy(node: BlockNode): node is BlockNode & ChildPermissionPolicy {
  return typeof (node as Partial<ChildPermissionPolicy>).childPermissions === "function";
}
