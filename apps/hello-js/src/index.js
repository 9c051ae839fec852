// A componentize-js app with the default fetch-event handler: no host-specific
// code, the same source `wasmtime serve` or Spin would run.
addEventListener("fetch", (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const path = new URL(request.url).pathname;
  if (path.endsWith("/echo")) {
    // Streams: each chunk read from the request is written to the response.
    return new Response(request.body, {
      headers: { "content-type": request.headers.get("content-type") ?? "application/octet-stream" },
    });
  }
  if (path.endsWith("/chunks")) {
    const count = Number(new URL(request.url).searchParams.get("n") ?? "8");
    let sent = 0;
    const body = new ReadableStream({
      pull(controller) {
        if (sent === count) {
          controller.close();
          return;
        }
        controller.enqueue(new TextEncoder().encode(`chunk ${sent}\n`));
        sent += 1;
      },
    });
    return new Response(body, { headers: { "content-type": "text/plain" } });
  }
  if (path.endsWith("/loop")) {
    for (;;) {}
  }
  if (path.endsWith("/fetch")) {
    // Outbound HTTP: allowed only to the component's allowed_outbound_hosts.
    const url = new URL(request.url).searchParams.get("url") ?? "https://example.com/";
    try {
      const upstream = await fetch(url, { headers: { "x-probe": "hello-js" } });
      return new Response(`${upstream.status} ${await upstream.text()}`);
    } catch (e) {
      return new Response(`fetch failed: ${e}\n`, { status: 502 });
    }
  }
  console.log(`hello-js: ${request.method} ${path}`);
  return new Response("Hello from componentize-js\n", {
    headers: { "content-type": "text/plain" },
  });
}
