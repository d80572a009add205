// Reads a chatbranch reply stream with the AI SDK's own parser and prints the assembled UIMessage.
// Usage: node read_stream.mjs <url> <json-body> <bearer-token>
import { parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from "ai";

const [url, body, token] = process.argv.slice(2);
const response = await fetch(url, {
  method: "POST",
  headers: {
    "content-type": "application/json",
    accept: "text/event-stream",
    authorization: `Bearer ${token}`,
  },
  body,
});
if (response.headers.get("x-vercel-ai-ui-message-stream") !== "v1") {
  throw new Error(`not a UI message stream: ${response.status}`);
}
const chunks = parseJsonEventStream({ stream: response.body, schema: uiMessageChunkSchema })
  .pipeThrough(new TransformStream({
    transform(result, controller) {
      if (!result.success) throw result.error;
      controller.enqueue(result.value);
    },
  }));
let message;
for await (const snapshot of readUIMessageStream({ stream: chunks, terminateOnError: true })) {
  message = snapshot;
}
process.stdout.write(JSON.stringify(message));
