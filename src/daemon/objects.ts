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
import { isWellFormedId } from "../qmp/keyval.ts";
import type { ObjectOptionsValue } from "./qapi-types.ts";

/** Properties of iothreads that must lie in [0, 2^63 - 1]. */
const IOTHREAD_RANGED = ["poll-max-ns", "poll-grow", "poll-shrink"] as const;

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
      throw new DenbdError("invalid", "Parameter 'id' expects an identifier");
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
  if (type === "iothread") {
    for (const name of IOTHREAD_RANGED) {
      const value = properties[name];
      if (typeof value === "number" && value < 0) {
        throw new DenbdError(
          "invalid",
          `${name} value must be in range [0, 9223372036854775807]`,
        );
      }
    }
  }
  if (type === "tls-creds-x509" || type === "tls-creds-psk") {
    const dir = typeof properties.dir === "string" ? properties.dir : "";
    const file = type === "tls-creds-psk" ? "keys.psk" : "ca-cert.pem";
    const path = join(dir, file);
    try {
      await Deno.stat(path);
    } catch (error) {
      throw new DenbdError(
        "not-found",
        `Unable to access credentials ${path}: ${osErrorText(error)}`,
      );
    }
  }
}
