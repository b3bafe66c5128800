/**
 * authz-simple: one identity, compared exactly.
 *
 * @module
 */

import type { Authorizer } from "./authorizer.ts";

/** Allows exactly one identity (QEMU's authz-simple). */
export class SimpleAuthorizer implements Authorizer {
  /** The one identity allowed. */
  readonly identity: string;

  /** An authorizer that allows `identity` and nobody else. */
  constructor(identity: string) {
    this.identity = identity;
  }

  /** True when `identity` is the allowed one, character for character. */
  isAllowed(identity: string): boolean {
    return identity === this.identity;
  }

  /** Nothing to stop. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
