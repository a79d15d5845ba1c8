"""Drive each `throtl mock --engine X` with the official Python client,
streaming, and check the text and token counts received.

Arguments: ENGINE=URL pairs. The simulator emits token k as WORDS[k % 20],
so the expected text of N tokens is known exactly.
"""

import importlib.util
import sys

WORDS = [" the", " of", " and", " to", " in", " is", " that", " it", " for", " on", " with", " as",
         " was", " at", " by", " an", " be", " this", " from", " or"]
N = 12
PROMPT = "one two three four five"  # five words = five prompt tokens in the simulator
PROMPT_TOKENS = 5
MODEL = "conformance-model"
EXPECTED = "".join(WORDS[k % len(WORDS)] for k in range(N))


def check(name, text, prompt_tokens, output_tokens, chunks):
    problems = []
    if text != EXPECTED:
        problems.append(f"text {text!r} != {EXPECTED!r}")
    if prompt_tokens is not None and prompt_tokens != PROMPT_TOKENS:
        problems.append(f"prompt tokens {prompt_tokens} != {PROMPT_TOKENS}")
    if output_tokens != N:
        problems.append(f"output tokens {output_tokens} != {N}")
    if chunks < N:
        problems.append(f"only {chunks} streamed text chunks for {N} tokens")
    if problems:
        raise AssertionError(f"{name}: " + "; ".join(problems))
    print(f"ok   {name}: {output_tokens} tokens in {chunks} chunks, prompt {prompt_tokens}")


def openai_chat(name, url, **client_kw):
    import openai
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-conformance", **client_kw)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=N,
        stream=True, stream_options={"include_usage": True})
    text, chunks, usage = "", 0, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                text += c.delta.content
                chunks += 1
    check(name + " (openai chat)", text, usage.prompt_tokens, usage.completion_tokens, chunks)


def openai_completions(name, url):
    import openai
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-conformance")
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=N, stream=True,
                                       stream_options={"include_usage": True})
    text, chunks, usage = "", 0, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.text:
                text += c.text
                chunks += 1
    check(name + " (openai completions)", text, usage.prompt_tokens, usage.completion_tokens, chunks)


def azure(url):
    import openai
    client = openai.AzureOpenAI(azure_endpoint=url, api_key="azure-conformance", api_version="2024-10-21")
    stream = client.chat.completions.create(
        model="my-deployment", messages=[{"role": "user", "content": PROMPT}], max_tokens=N,
        stream=True, stream_options={"include_usage": True})
    text, chunks, usage = "", 0, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                text += c.delta.content
                chunks += 1
    check("openai (AzureOpenAI deployment route)", text, usage.prompt_tokens, usage.completion_tokens, chunks)


def tgi(url):
    from huggingface_hub import InferenceClient
    client = InferenceClient(base_url=url)
    text, chunks, details = "", 0, None
    for out in client.text_generation(PROMPT, max_new_tokens=N, stream=True, details=True):
        if not out.token.special:
            text += out.token.text
            chunks += 1
        if out.details is not None:
            details = out.details
        if out.generated_text is not None and out.generated_text != EXPECTED:
            raise AssertionError(f"tgi: generated_text {out.generated_text!r}")
    check("tgi (huggingface_hub InferenceClient.text_generation)", text, None, details.generated_tokens, chunks)


def ollama_native(url):
    import ollama
    client = ollama.Client(host=url)
    text, chunks, last = "", 0, None
    for part in client.chat(model=MODEL, messages=[{"role": "user", "content": PROMPT}],
                            stream=True, options={"num_predict": N}):
        if part.message.content:
            text += part.message.content
            chunks += 1
        last = part
    if not last.done or not last.eval_duration or not last.total_duration:
        raise AssertionError("ollama chat: final part lacks done/durations")
    check("ollama (ollama.Client.chat)", text, last.prompt_eval_count, last.eval_count, chunks)
    text, chunks, last = "", 0, None
    for part in client.generate(model=MODEL, prompt=PROMPT, stream=True, options={"num_predict": N}):
        if part.response:
            text += part.response
            chunks += 1
        last = part
    check("ollama (ollama.Client.generate)", text, last.prompt_eval_count, last.eval_count, chunks)
    names = [m.model for m in client.list().models]
    if MODEL not in names:
        raise AssertionError(f"ollama list: {names}")


def anthropic_messages(url):
    import anthropic
    client = anthropic.Anthropic(base_url=url, api_key="sk-ant-conformance")
    text, chunks = "", 0
    with client.messages.stream(model=MODEL, max_tokens=N,
                                messages=[{"role": "user", "content": PROMPT}]) as stream:
        for delta in stream.text_stream:
            text += delta
            chunks += 1
        final = stream.get_final_message()
    if final.stop_reason != "max_tokens":
        raise AssertionError(f"anthropic stop_reason {final.stop_reason}")
    check("anthropic (Anthropic.messages.stream)", text, final.usage.input_tokens, final.usage.output_tokens, chunks)


def gemini(url):
    from google import genai
    from google.genai import types
    client = genai.Client(api_key="gemini-conformance", http_options=types.HttpOptions(base_url=url, api_version="v1beta"))
    text, chunks, usage = "", 0, None
    for chunk in client.models.generate_content_stream(
            model=MODEL, contents=PROMPT, config=types.GenerateContentConfig(max_output_tokens=N)):
        if chunk.text:
            text += chunk.text
            chunks += 1
        if chunk.usage_metadata is not None:
            usage = chunk.usage_metadata
    check("gemini (google-genai generate_content_stream)", text, usage.prompt_token_count, usage.candidates_token_count, chunks)


def cohere_chat(url):
    import cohere
    client = cohere.ClientV2(api_key="co-conformance", base_url=url)
    text, chunks, usage = "", 0, None
    for ev in client.chat_stream(model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=N):
        if ev.type == "content-delta":
            t = ev.delta.message.content.text
            if t:
                text += t
                chunks += 1
        elif ev.type == "message-end":
            usage = ev.delta.usage
    check("cohere (cohere.ClientV2.chat_stream)", text, int(usage.tokens.input_tokens), int(usage.tokens.output_tokens), chunks)


def have(module):
    return importlib.util.find_spec(module) is not None


def main():
    urls = dict(a.split("=", 1) for a in sys.argv[1:])
    skipped = []
    runs = [
        ("vllm", lambda u: (openai_chat("vllm", u), openai_completions("vllm", u)), "openai"),
        ("sglang", lambda u: openai_chat("sglang", u), "openai"),
        ("llamacpp", lambda u: openai_chat("llamacpp", u), "openai"),
        ("openai", lambda u: (openai_chat("openai", u), azure(u)), "openai"),
        ("ollama", lambda u: (ollama_native(u), openai_chat("ollama", u)), "ollama"),
        ("tgi", tgi, "huggingface_hub"),
        ("anthropic", anthropic_messages, "anthropic"),
        ("gemini", gemini, "google.genai"),
        ("cohere", cohere_chat, "cohere"),
    ]
    failures = 0
    for engine, run, module in runs:
        if engine not in urls:
            continue
        if not have(module.split(".")[0]) or (module == "google.genai" and not have("google.genai")):
            skipped.append(engine)
            continue
        try:
            run(urls[engine])
        except Exception as e:  # report every engine, then fail
            failures += 1
            print(f"FAIL {engine}: {type(e).__name__}: {e}")
    if skipped:
        print("skipped (client not installed): " + ", ".join(skipped))
    if failures:
        sys.exit(1)
    print("conformance: all official clients agree with the simulator")


if __name__ == "__main__":
    main()
