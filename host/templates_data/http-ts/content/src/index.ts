// A fetch-event handler: the request is a standard Request, the answer a Response.
// Outbound fetch() reaches only the hosts in allowed_outbound_hosts (spin.toml).
// esbuild strips the types when it bundles (build.mjs); `npx tsc --noEmit` checks them
// if typescript is installed.

async function handle(request: Request): Promise<Response> {
  return new Response('Hello from TypeScript!', {
    status: 200,
    headers: { 'content-type': 'text/plain' },
  });
}

//@ts-ignore: `fetch` events belong to the service-worker lib, not WebWorker
addEventListener('fetch', (event: FetchEvent) => {
  event.respondWith(handle(event.request));
});
