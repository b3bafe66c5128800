/**
 * What every authorization object offers the NBD server: a yes or no for
 * the identity a TLS peer proved (an X.509 distinguished name as GnuTLS
 * prints it, or a PSK username), and a way to let go of what it holds.
 *
 * @module
 */

/** Decides whether a TLS peer identity may use the server. */
export interface Authorizer {
  /** True when `identity` is allowed; a broken source (unreadable list file) denies. */
  isAllowed(identity: string): boolean;
  /** Stop whatever the authorizer runs (a file watcher); resolves once it has stopped. */
  close(): Promise<void>;
}
