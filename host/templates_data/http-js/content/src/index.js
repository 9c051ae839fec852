// A fetch-event handler: the request is a standard Request, the answer a Response.
// Outbound fetch() reaches only the hosts in allowed_outbound_hosts (spin.toml).

async function handle(request) {
  return new Response('Hello from JavaScript!', {
    status: 200,
    headers: { 'content-type': 'text/plain' },
  });
}

addEventListener('fetch', (event) => {
  event.respondWith(handle(event.request));
});
