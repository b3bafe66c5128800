/**
 * The daemon's user-created objects (object-add, --object): iothreads, TLS
 * credentials, authorization lists and secrets, checked the way QEMU checks
 * them when they are created. denbd runs no extra threads and has no TLS
 * yet, so the objects are recorded and validated, and refused where they
 * would have to take effect (see the NBD server).
 *
 * @module
 */

import { join } from "node:path";
import { DenbdError, osErrorText } from "../errors.ts";
import { KeyvalError } from "../qmp/keyval.ts";
import { ID_HINT, isWellFormedId } from "../qmp/qemu-opts.ts";
import { OBJECT_TYPES, type ObjectOptionsValue } from "./qapi-types.ts";

/** Properties of iothreads that must lie in [0, 2^63 - 1]. */
const IOTHREAD_RANGED = ["poll-max-ns", "poll-grow", "poll-shrink"] as const;

/** The shortest PSK key GnuTLS accepts, in bytes. */
const MIN_PSK_KEY_BYTES = 4;

/** A created object. */
export interface DaemonObject {
  /** Its id. */
  readonly id: string;
  /** Its QOM type, e.g. "iothread". */
  readonly type: string;
  /** Its properties as given. */
  readonly properties: Readonly<Record<string, unknown>>;
}

/** The objects of one daemon, by id. */
export class ObjectRegistry {
  readonly #objects = new Map<string, DaemonObject>();
  readonly #inUse: (id: string) => string | null;

  /** `inUse(id)` names what still uses an object, or null when nothing does. */
  constructor(inUse: (id: string) => string | null) {
    this.#inUse = inUse;
  }

  /** The object with `id`. */
  get(id: string): DaemonObject | undefined {
    return this.#objects.get(id);
  }

  /** Create an object (object-add). */
  async add(options: ObjectOptionsValue): Promise<void> {
    const { "qom-type": type, id, ...properties } = options;
    if (!isWellFormedId(id)) {
      throw new KeyvalError("Parameter 'id' expects an identifier", ID_HINT);
    }
    if (this.#objects.has(id)) {
      throw new DenbdError(
        "busy",
        `attempt to add duplicate property '${id}' to object (type 'container')`,
      );
    }
    await checkObject(type, properties);
    this.#objects.set(id, { id, type, properties });
  }

  /** Delete an object (object-del); refused while something uses it. */
  delete(id: string): void {
    if (!this.#objects.has(id)) throw new DenbdError("not-found", `object '${id}' not found`);
    const user = this.#inUse(id);
    if (user) throw new DenbdError("busy", `object '${id}' is in use by ${user}`);
    this.#objects.delete(id);
  }
}

/** Check the properties of a new object of `type` as QEMU does on creation. */
async function checkObject(type: string, properties: Record<string, unknown>): Promise<void> {
  const support = OBJECT_TYPES[type];
  if (support === "absent") throw new DenbdError("invalid", `invalid object type: ${type}`);
  if (support === "unsupported") {
    throw new DenbdError("not-supported", `object type '${type}' is not supported by denbd yet`);
  }
  if ("loaded" in properties) {
    throw new DenbdError("invalid", `Property '${type}.loaded' is not writable`);
  }
  switch (type) {
    case "iothread":
      return checkIothread(properties);
    case "secret":
      return await checkSecret(properties);
    case "tls-creds-x509":
      return void await checkCredentialsDir(type, properties);
    case "tls-creds-psk":
      return await checkPskCredentials(properties);
  }
}

function checkIothread(properties: Record<string, unknown>): void {
  for (const name of IOTHREAD_RANGED) {
    const value = properties[name];
    if (typeof value === "number" && value < 0) {
      throw new DenbdError("invalid", `${name} value must be in range [0, 9223372036854775807]`);
    }
  }
}

/** A secret has its data inline or in a readable file, not both; encrypted ones are refused. */
async function checkSecret(properties: Record<string, unknown>): Promise<void> {
  const { data, file, keyid } = properties;
  if (data !== undefined && file !== undefined) {
    throw new DenbdError("invalid", "'file' and 'data' are mutually exclusive");
  }
  if (data === undefined && file === undefined) {
    throw new DenbdError("invalid", "Either 'file' or 'data' must be provided");
  }
  // Only whether the file reads matters until secrets are used (TLS).
  if (typeof file === "string") await readFileAsGlib(file, `Unable to read ${file}`);
  if (keyid !== undefined) {
    throw new DenbdError(
      "not-supported",
      "encrypted secrets (keyid) are not supported by denbd yet",
    );
  }
}

/**
 * Read a whole file as GLib's g_file_get_contents does, failing with GLib's
 * words for what went wrong (open or read) after `prefix`.
 */
async function readFileAsGlib(path: string, prefix: string): Promise<string> {
  const fail = (what: string, error: unknown) =>
    new DenbdError("not-found", `${prefix}: ${what} \u201c${path}\u201d: ${osErrorText(error)}`);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    throw fail("Failed to open file", error);
  }
  const decoder = new TextDecoder();
  let text = "";
  try {
    for (let chunk = new Uint8Array(4096), count; (count = await file.read(chunk)) !== null;) {
      text += decoder.decode(chunk.subarray(0, count), { stream: true });
    }
  } catch (error) {
    throw fail("Error reading file", error);
  } finally {
    file.close();
  }
  return text + decoder.decode();
}

/**
 * PSK credentials as QEMU loads them: a server takes no username; a client
 * needs its username ("qemu" unless given) in the directory's keys.psk.
 */
async function checkPskCredentials(properties: Record<string, unknown>): Promise<void> {
  const server = properties.endpoint === "server";
  if (server && properties.username !== undefined) {
    throw new DenbdError("invalid", "username should not be set when endpoint=server");
  }
  const keysFile = await checkCredentialsDir("tls-creds-psk", properties);
  if (server) return;
  const username = typeof properties.username === "string" ? properties.username : "qemu";
  const keys = await readFileAsGlib(keysFile, `Cannot read PSK file ${keysFile}`);
  const line = keys.split("\n").find((line) => line.startsWith(`${username}:`));
  if (line === undefined) {
    throw new DenbdError("not-found", `Username ${username} not found in PSK file ${keysFile}`);
  }
  const problem = pskKeyProblem(line.slice(username.length + 1));
  if (problem) throw new DenbdError("invalid", `Cannot set PSK client credentials: ${problem}`);
}

/** What GnuTLS finds wrong with a hex PSK key (as GnuTLS words it), or null. */
function pskKeyProblem(hex: string): string | null {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(hex)) return "Error in parsing.";
  return hex.length < 2 * MIN_PSK_KEY_BYTES ? "The request is invalid." : null;
}

/** X.509 and PSK credentials need a directory holding their first file; returns its path. */
async function checkCredentialsDir(
  type: "tls-creds-x509" | "tls-creds-psk",
  properties: Record<string, unknown>,
): Promise<string> {
  if (typeof properties.dir !== "string") {
    throw new DenbdError("invalid", "Missing 'dir' property value");
  }
  const path = join(properties.dir, type === "tls-creds-psk" ? "keys.psk" : "ca-cert.pem");
  try {
    await Deno.stat(path);
  } catch (error) {
    throw new DenbdError(
      "not-found",
      `Unable to access credentials ${path}: ${osErrorText(error)}`,
    );
  }
  return path;
}
