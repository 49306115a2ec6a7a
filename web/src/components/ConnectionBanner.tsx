/** Shown while the page has lost the server's event stream: the job list may be stale until it
 * reconnects (by itself; the list is then fetched again). */
export function ConnectionBanner({ connected }: { connected: boolean }) {
  if (connected) return null;
  return (
    <p className="banner" role="status" data-testid="disconnected">
      Disconnected from the idlsec server: reconnecting… (jobs shown may be out of date)
    </p>
  );
}
