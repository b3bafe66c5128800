/**
 * The daemon's user-created objects (object-add, --object), made live the
 * way QEMU makes them: secrets hold their data, authorization objects
 * decide who may connect, TLS credentials are loaded. Each type's maker
 * checks the properties as QEMU does on creation and answers with QEMU's
 * messages; object-del releases what an object holds.
 *
 * @module
 */

import { join } from "node:path";
import { DenbdError, messageOf, osErrorText } from "../errors.ts";
import { readFileLikeGlib } from "../glib-file.ts";
import { Logger } from "../log.ts";
import { KeyvalError } from "../qmp/keyval.ts";
import { ID_HINT, isWellFormedId } from "../qmp/qemu-opts.ts";
import type { Authorizer } from "../authz/authorizer.ts";
import { ListAuthorizer } from "../authz/list.ts";
import { ListFileAuthorizer } from "../authz/list-file.ts";
import { SimpleAuthorizer } from "../authz/simple.ts";
import { OBJECT_TYPES, type ObjectOptionsValue } from "./qapi-types.ts";
import { loadSecret, type SecretSource, secretText } from "./secrets.ts";

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

/** What a live object holds, by the kind of object. */
interface Held {
  /** A secret's data. */
  readonly secret?: Uint8Array;
  /** An authorization object's decisions. */
  readonly authorizer?: Authorizer;
}

/** An object and what it holds. */
interface Entry {
  readonly object: DaemonObject;
  readonly held: Held;
}

/** What makers may ask of the registry. */
interface MakerContext {
  /** The text of secret `id` (x509 key passwords). */
  secret(id: string): string;
  /** Report a problem that does not stop anything (a list file that fails to reload). */
  warn(message: string): void;
}

/** Check the properties of a new object as QEMU does on creation, and make what it holds. */
type Maker = (properties: Record<string, unknown>, context: MakerContext) => Promise<Held>;

/** The maker of each object type denbd creates ("created" in OBJECT_TYPES). */
const MAKERS: Readonly<Record<string, Maker>> = {
  "authz-list": (properties) =>
    Promise.resolve({
      authorizer: new ListAuthorizer(properties as ConstructorParameters<typeof ListAuthorizer>[0]),
    }),
  "authz-list-file": async (properties, context) => ({
    authorizer: await ListFileAuthorizer.open({
      filename: properties.filename as string,
      refresh: properties.refresh as boolean | undefined,
      warn: (message) => context.warn(message),
    }),
  }),
  "authz-simple": (properties) =>
    Promise.resolve({ authorizer: new SimpleAuthorizer(properties.identity as string) }),
  "iothread": (properties) => Promise.resolve(checkIothread(properties)),
  "secret": async (properties) => ({ secret: await loadSecret(properties as SecretSource) }),
  "tls-creds-anon": () => Promise.resolve({}),
  "tls-creds-psk": async (properties) => (await checkPskCredentials(properties), {}),
  "tls-creds-x509": async (
    properties,
  ) => (await checkCredentialsDir("tls-creds-x509", properties), {}),
};

/** The objects of one daemon, by id. */
export class ObjectRegistry {
  readonly #entries = new Map<string, Entry>();
  /** Releases still under way (file watchers stopping), for {@linkcode closeAll}. */
  readonly #releasing = new Set<Promise<void>>();
  readonly #inUse: (id: string) => string | null;
  readonly #context: MakerContext;

  /**
   * `inUse(id)` names what still uses an object, or null when nothing does;
   * `warn` reports problems that stop nothing (a list file that fails to reload).
   */
  constructor(
    inUse: (id: string) => string | null,
    warn: (message: string) => void = (message) => new Logger().warn(message),
  ) {
    this.#inUse = inUse;
    this.#context = { secret: (id) => this.secret(id), warn };
  }

  /** The object with `id`. */
  get(id: string): DaemonObject | undefined {
    return this.#entries.get(id)?.object;
  }

  /** Create an object (object-add). */
  async add(options: ObjectOptionsValue): Promise<void> {
    const { "qom-type": type, id, ...properties } = options;
    if (!isWellFormedId(id)) {
      throw new KeyvalError("Parameter 'id' expects an identifier", ID_HINT);
    }
    const make = makerOf(type, properties);
    if (this.#entries.has(id)) {
      throw new DenbdError(
        "busy",
        `attempt to add duplicate property '${id}' to object (type 'container')`,
      );
    }
    const held = await make(properties, this.#context);
    if (this.#entries.has(id)) {
      // Another object-add of the same id finished first while this one loaded.
      this.#release(held);
      throw new DenbdError(
        "busy",
        `attempt to add duplicate property '${id}' to object (type 'container')`,
      );
    }
    this.#entries.set(id, { object: { id, type, properties }, held });
  }

  /** Delete an object (object-del), releasing what it holds; refused while something uses it. */
  delete(id: string): void {
    const entry = this.#entries.get(id);
    if (!entry) throw new DenbdError("not-found", `object '${id}' not found`);
    const user = this.#inUse(id);
    if (user) throw new DenbdError("busy", `object '${id}' is in use by ${user}`);
    this.#entries.delete(id);
    this.#release(entry.held);
  }

  /** Release every object (the daemon stops); resolves once every release has finished. */
  async closeAll(): Promise<void> {
    for (const entry of this.#entries.values()) this.#release(entry.held);
    this.#entries.clear();
    await Promise.all(this.#releasing);
  }

  #release(held: Held): void {
    const releasing = releaseHeld(held, this.#context).finally(() =>
      this.#releasing.delete(releasing)
    );
    this.#releasing.add(releasing);
  }

  /**
   * The authorizer of object `id`, or undefined when there is none, or the
   * object is no authorization object (QEMU then denies every client; see
   * {@linkcode authorize}).
   */
  authorizer(id: string): Authorizer | undefined {
    return this.#entries.get(id)?.held.authorizer;
  }

  /**
   * Whether the client whose X.509 certificate has the distinguished name
   * `identity` may use a server whose `tls-authz` is `id`: null when it may,
   * otherwise why not, in the words qsd 7.2 logs ("Cannot find QAuthZ object
   * ID a0", "Object 'a0' is not a QAuthZ subclass", "TLS x509 authz check for
   * C=GB,O=denbd test,CN=alice is denied"). The object is looked up at each
   * check, as QEMU does. (QEMU 7.2 checks authz for X.509 clients only: PSK
   * and anonymous clients are let in whatever `tls-authz` says.)
   */
  authorize(id: string, identity: string): string | null {
    const entry = this.#entries.get(id);
    if (!entry) return `Cannot find QAuthZ object ID ${id}`;
    const authorizer = entry.held.authorizer;
    if (!authorizer) return `Object '${id}' is not a QAuthZ subclass`;
    return authorizer.isAllowed(identity) ? null : `TLS x509 authz check for ${identity} is denied`;
  }

  /**
   * A secret's value as text, with QEMU's messages: "No secret with id
   * '...'", "Object with id '...' is not a secret", "Data from secret ...
   * is not valid UTF-8".
   */
  secret(id: string): string {
    const entry = this.#entries.get(id);
    if (!entry) throw new DenbdError("not-found", `No secret with id '${id}'`);
    if (!entry.held.secret) {
      throw new DenbdError("invalid", `Object with id '${id}' is not a secret`);
    }
    return secretText(id, entry.held.secret);
  }
}

/** The maker of `type`, after QEMU's checks that apply to every type. */
function makerOf(type: string, properties: Record<string, unknown>): Maker {
  const support = OBJECT_TYPES[type];
  if (support === "absent") throw new DenbdError("invalid", `invalid object type: ${type}`);
  const maker = MAKERS[type];
  if (support === "unsupported" || !maker) {
    throw new DenbdError("not-supported", `object type '${type}' is not supported by denbd yet`);
  }
  if ("loaded" in properties) {
    throw new DenbdError("invalid", `Property '${type}.loaded' is not writable`);
  }
  return maker;
}

/** Let go of what an object holds; resolves once it has stopped. */
async function releaseHeld(held: Held, context: MakerContext): Promise<void> {
  try {
    await held.authorizer?.close();
  } catch (error) {
    context.warn(`closing an authorization object: ${(error as Error).message}`);
  }
}

function checkIothread(properties: Record<string, unknown>): Held {
  for (const name of IOTHREAD_RANGED) {
    const value = properties[name];
    if (typeof value === "number" && value < 0) {
      throw new DenbdError("invalid", `${name} value must be in range [0, 9223372036854775807]`);
    }
  }
  return {};
}

/** The shortest PSK key GnuTLS accepts, in bytes. */
const MIN_PSK_KEY_BYTES = 4;

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
  let keys: string;
  try {
    keys = new TextDecoder().decode(await readFileLikeGlib(keysFile));
  } catch (error) {
    throw new DenbdError("not-found", `Cannot read PSK file ${keysFile}: ${messageOf(error)}`);
  }
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
