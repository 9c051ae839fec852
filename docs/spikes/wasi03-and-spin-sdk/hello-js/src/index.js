addEventListener('fetch', (event) =>
  event.respondWith(new Response('Hello from componentize-js!\n', {
    status: 200,
    headers: { 'content-type': 'text/plain' },
  })),
);
