// Spin's JS template (http-js): a fetch-event handler built with @spinframework/build-tools,
// served unchanged. Routes: / hello; /echo the request (method, path, query, headers, body
// length and SHA-256 digest) as JSON; /fetch?url=U an outbound fetch (allowed_outbound_hosts).

async function digest(bytes) {
  const hash = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(hash)).map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function handle(request) {
  const url = new URL(request.url);
  if (url.pathname === '/echo') {
    const body = new Uint8Array(await request.arrayBuffer());
    return Response.json({
      method: request.method,
      path: url.pathname,
      query: url.search,
      headers: Object.fromEntries(request.headers.entries()),
      body_len: body.length,
      body_sha256: await digest(body),
    });
  }
  if (url.pathname === '/fetch') {
    try {
      const upstream = await fetch(url.searchParams.get('url'));
      return new Response(await upstream.text(), { status: upstream.status });
    } catch (e) {
      return new Response(`fetch failed: ${e}`, { status: 502 });
    }
  }
  return new Response('Hello, Spin!', {
    status: 200,
    headers: { 'content-type': 'text/plain' },
  });
}

addEventListener('fetch', (event) => {
  event.respondWith(handle(event.request));
});
