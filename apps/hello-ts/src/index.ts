// hello-ts: a Spin-style HTTP handler written in TypeScript.
//
// `handleRequest` is the application. The rest of this file is a small
// adapter that exports the WIT interface `spinhost:http/incoming-handler@0.1.0`
// (world `handler` in ../../wit/http.wit) in the shape componentize-js
// expects: records are camelCase objects, variants are `{ tag, val? }`,
// options are `T | undefined`, `list<u8>` is a Uint8Array and tuples are arrays.

// ---------------------------------------------------------------------------
// The application
// ---------------------------------------------------------------------------

interface HttpRequest {
  /** Upper-case method name, e.g. "GET". */
  method: string;
  /** Raw path and query, e.g. "/hello-ts?x=1". */
  uri: string;
  /** Lower-case names; repeated headers are joined with ", ". */
  headers: Record<string, string>;
  body: Uint8Array;
}

interface HttpResponse {
  status: number;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
}

function handleRequest(_request: HttpRequest): HttpResponse {
  return {
    status: 200,
    headers: { "content-type": "text/plain" },
    body: "Hello from TypeScript\n",
  };
}

// ---------------------------------------------------------------------------
// Adapter: spinhost:http/types@0.1.0 as componentize-js represents it
// ---------------------------------------------------------------------------

type Method =
  | { tag: "get" | "head" | "post" | "put" | "delete" | "connect" | "options" | "trace" | "patch" }
  | { tag: "other"; val: string };

type Scheme = { tag: "HTTP" | "HTTPS" } | { tag: "other"; val: string };

/** `list<tuple<field-name, field-value>>` */
type Headers = Array<[string, Uint8Array]>;

interface WitRequest {
  method: Method;
  scheme?: Scheme;
  authority?: string;
  pathWithQuery?: string;
  headers: Headers;
  body: Uint8Array;
}

interface WitResponse {
  status: number;
  headers: Headers;
  body: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function fromWit(request: WitRequest): HttpRequest {
  const headers: Record<string, string> = {};
  for (const [name, value] of request.headers) {
    const text = decoder.decode(value);
    headers[name] = name in headers ? `${headers[name]}, ${text}` : text;
  }
  return {
    method: request.method.tag === "other" ? request.method.val : request.method.tag.toUpperCase(),
    uri: request.pathWithQuery ?? "/",
    headers,
    body: request.body,
  };
}

function toWit(response: HttpResponse): WitResponse {
  const body = response.body ?? new Uint8Array();
  return {
    status: response.status,
    headers: Object.entries(response.headers ?? {}).map(
      ([name, value]): [string, Uint8Array] => [name, encoder.encode(value)],
    ),
    body: typeof body === "string" ? encoder.encode(body) : body,
  };
}

/** Export of `spinhost:http/incoming-handler@0.1.0`. */
export const incomingHandler = {
  handle(request: WitRequest): WitResponse {
    return toWit(handleRequest(fromWit(request)));
  },
};
