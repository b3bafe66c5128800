/**
 * The file I/O used where FFI is not permitted: Deno's file API, with no
 * holes, no fallocate and no image locking.
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import { endOfFile, type FileIo, type OpenedFile } from "./file-io.ts";
import { Errno, errnoKind } from "./libc.ts";

/**
 * The fallback where FFI is not permitted: `Deno.FsFile` has no positional
 * I/O, so seek-then-transfer pairs run one at a time. No holes, no
 * fallocate, no locking.
 */
export class PortableIo implements FileIo {
  readonly #file: Deno.FsFile;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  /** Open `path` with Deno's file API and measure its size. */
  static async open(path: string, readOnly: boolean): Promise<OpenedFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: !readOnly });
    } catch (error) {
      throw fromDenoError(`Could not open '${path}'`, error);
    }
    try {
      const size = await file.seek(0, Deno.SeekMode.End);
      return { io: new PortableIo(file), size, alignment: 1, native: false };
    } catch (error) {
      file.close();
      throw fromDenoError("seek", error);
    }
  }

  /** Never done at once: Deno's file API has only asynchronous positional I/O. */
  readNow(): boolean {
    return false;
  }

  /** Never done at once, as reads. */
  writeNow(): boolean {
    return false;
  }

  read(offset: number, into: Uint8Array): Promise<void> {
    return this.#serially("read", async () => {
      await this.#file.seek(offset, Deno.SeekMode.Start);
      for (let done = 0; done < into.length;) {
        const count = await this.#file.read(into.subarray(done));
        if (count === null) throw endOfFile(offset + done);
        done += count;
      }
    });
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#serially("write", async () => {
      await this.#file.seek(offset, Deno.SeekMode.Start);
      for (let done = 0; done < data.length;) {
        const count = await this.#file.write(data.subarray(done));
        if (count === 0) {
          throw new DenbdError("io", `write: no progress at offset ${offset + done}`);
        }
        done += count;
      }
    });
  }

  allocate(): Promise<boolean> {
    return Promise.resolve(false);
  }

  syncData(): Promise<void> {
    return this.#serially("fdatasync", () => this.#file.syncData());
  }

  prefetch(): Promise<void> {
    return Promise.resolve();
  }

  seek(): undefined {
    return undefined;
  }

  close(): Promise<void> {
    return this.#serially("close", () => Promise.resolve(this.#file.close()));
  }

  /** Run `operation` after every earlier one has settled. */
  #serially<T>(name: string, operation: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(operation).catch((error) => {
      throw fromDenoError(name, error);
    });
    this.#queue = result.catch(() => {});
    return result;
  }
}

/** A DenbdError for an error thrown by Deno's file API, keeping its errno's kind. */
function fromDenoError(operation: string, error: unknown): DenbdError {
  if (error instanceof DenbdError) return error;
  const code = (error as { code?: unknown }).code;
  const errno = Object.hasOwn(Errno, String(code)) ? Errno[code as keyof typeof Errno] : Errno.EIO;
  const message = error instanceof Error ? error.message : String(error);
  return new DenbdError(errnoKind(errno), `${operation}: ${message}`, { cause: error });
}
