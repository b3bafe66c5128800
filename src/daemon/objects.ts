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
import { DenbdError } from "../errors.ts";
import { KeyvalError } from "../qmp/keyval.ts";
import { ID_HINT, isWellFormedId } from "../qmp/qemu-opts.ts";
import type { Authorizer } from "../authz/authorizer.ts";
import { ListAuthorizer } from "../authz/list.ts";
import { ListFileAuthorizer } from "../authz/list-file.ts";
import { SimpleAuthorizer } from "../authz/simple.ts";
import { PSK_KEYS_FILE, TlsCredentials, type TlsEndpoint, X509_FILES } from "../tls/credentials.ts";
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
  /** TLS credentials, loaded. */
  readonly credentials?: TlsCredentials;
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
  "tls-creds-anon": async (properties) => ({
    credentials: await TlsCredentials.anon({
      endpoint: endpointOf(properties),
      dhParamsFile: await dhParamsFile(properties),
      priority: properties.priority as string | undefined,
    }),
  }),
  "tls-creds-psk": async (properties) => ({ credentials: await pskCredentials(properties) }),
  "tls-creds-x509": async (properties, context) => ({
    credentials: await x509Credentials(properties, context),
  }),
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
    warn: (message: string) => void,
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
   * The TLS credentials object `id`, with QEMU's messages: "No TLS
   * credentials with id '...'", "Object with id '...' is not TLS
   * credentials". Whether they serve the right endpoint is for the caller.
   */
  tlsCredentials(id: string): TlsCredentials {
    const entry = this.#entries.get(id);
    if (!entry) throw new DenbdError("not-found", `No TLS credentials with id '${id}'`);
    if (!entry.held.credentials) {
      throw new DenbdError("invalid", `Object with id '${id}' is not TLS credentials`);
    }
    return entry.held.credentials;
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
  held.credentials?.release();
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

/** The endpoint of TLS credentials; QEMU's default is the client. */
function endpointOf(properties: Record<string, unknown>): TlsEndpoint {
  return (properties.endpoint as TlsEndpoint | undefined) ?? "client";
}

/** The credentials directory, or QEMU's message when it is needed and not given. */
function requiredDir(properties: Record<string, unknown>): string {
  if (typeof properties.dir !== "string") {
    throw new DenbdError("invalid", "Missing 'dir' property value");
  }
  return properties.dir;
}

/** `dir/name` when it exists (QEMU's optional credential files), else undefined. */
async function optionalFile(dir: string, name: string): Promise<string | undefined> {
  const path = join(dir, name);
  try {
    await Deno.stat(path);
  } catch (error) {
    // Another failure is the engine's to report when it reads the file.
    if (error instanceof Deno.errors.NotFound) return undefined;
  }
  return path;
}

/** A server's DH parameters file, when its directory has one. */
async function dhParamsFile(properties: Record<string, unknown>): Promise<string | undefined> {
  if (endpointOf(properties) !== "server" || typeof properties.dir !== "string") return undefined;
  return await optionalFile(properties.dir, X509_FILES.dhParams);
}

/** PSK credentials from the directory's keys.psk. */
async function pskCredentials(properties: Record<string, unknown>): Promise<TlsCredentials> {
  const endpoint = endpointOf(properties);
  const username = properties.username as string | undefined;
  if (typeof properties.dir !== "string" && endpoint === "server" && username !== undefined) {
    // QEMU refuses a server's username before it looks for the directory; with a directory,
    // TlsCredentials.psk gives the same refusal.
    throw new DenbdError("invalid", "username should not be set when endpoint=server");
  }
  const dir = requiredDir(properties);
  return await TlsCredentials.psk({
    endpoint,
    keysFile: join(dir, PSK_KEYS_FILE),
    username,
    dhParamsFile: await dhParamsFile(properties),
    priority: properties.priority as string | undefined,
  });
}

/**
 * X.509 credentials from the directory, the key's password from the secret
 * `passwordid`. QEMU looks that secret up only when it has a certificate
 * and key to load (always for a server; for a client, when the directory
 * has both), so a client without them ignores `passwordid`, as QEMU does.
 * QEMU looks it up after checking the files, denbd before: when both the
 * files and the secret are wrong, denbd names the secret.
 */
async function x509Credentials(
  properties: Record<string, unknown>,
  context: MakerContext,
): Promise<TlsCredentials> {
  const dir = requiredDir(properties);
  const endpoint = endpointOf(properties);
  const passwordid = properties.passwordid as string | undefined;
  const loadsKey = endpoint === "server" || (
    await optionalFile(dir, X509_FILES.clientCert) !== undefined &&
    await optionalFile(dir, X509_FILES.clientKey) !== undefined
  );
  return await TlsCredentials.x509({
    endpoint,
    dir,
    verifyPeer: properties["verify-peer"] as boolean | undefined,
    keyPassword: passwordid !== undefined && loadsKey ? context.secret(passwordid) : undefined,
    priority: properties.priority as string | undefined,
    sanityCheck: properties["sanity-check"] as boolean | undefined,
  });
}
