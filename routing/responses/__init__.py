"""The OpenAI Responses API on the gateway (DESIGN §13).

Translation for routes without a Responses API (azure-ai), pure and without I/O:
`translate_request.responses_to_chat` (a create body → a chat completions body, or a 400 naming
what cannot be translated), `translate_response.chat_to_response` (a chat completion → a Response
object) and `translate_stream.ChatToResponsesStream` (chat completion chunks → Responses events).
"""
