#!/usr/bin/env node
// A small OpenAI-compatible chat server for local runs and tests.
//
// Serves one GGUF model (by default SmolLM2-135M-Instruct, see fetch-model.sh) on the CPU through
// node-llama-cpp's prebuilt binaries: no compilation, no network. Requests are served one at a
// time (one thread); each request gets a fresh context sequence, so answers never depend on the
// requests before them, and temperature 0 (the default) is greedy and deterministic.
//
//   node server.mjs --model PATH [--host 127.0.0.1] [--port 0] [--alias NAME]
//                   [--ctx-size 4096] [--threads 1] [--max-queue 32] [--chat-wrapper jinja|auto]
//
// Prints exactly one line, `listening on http://HOST:PORT`, on stdout once the model is loaded and
// the server accepts requests; everything else goes to stderr.

import http from "node:http";
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { getLlama, LlamaChat, LlamaLogLevel, resolveChatWrapper } from "node-llama-cpp";

const MAX_BODY_BYTES = 1024 * 1024;
const DEFAULT_MAX_TOKENS = 256;
const MAX_TOKENS_CAP = 1024;
const DEFAULT_ALIAS = "smollm2-135m-instruct";

// ---------------------------------------------------------------------------------------------
// Configuration: flags win over environment variables, which win over defaults.

function log(...parts) {
    process.stderr.write(`[llm-server ${new Date().toISOString()}] ${parts.join(" ")}\n`);
}

function usage() {
    return [
        "usage: node server.mjs --model PATH [--host HOST] [--port N] [--alias NAME]",
        "                       [--ctx-size N] [--threads N] [--max-queue N] [--chat-wrapper jinja|auto]",
        "",
        "  --model PATH     GGUF file to serve (env LLM_SERVER_MODEL)",
        "  --host HOST      address to bind (env LLM_SERVER_HOST, default 127.0.0.1)",
        "  --port N         port, 0 picks a free one (env LLM_SERVER_PORT, default 0)",
        `  --alias NAME     model id reported by the API (env LLM_SERVER_ALIAS, default ${DEFAULT_ALIAS})`,
        "  --ctx-size N     context size in tokens, prompt + completion (env LLM_SERVER_CTX_SIZE, default 4096)",
        "  --threads N      CPU threads for evaluation (env LLM_SERVER_THREADS, default 1)",
        "  --max-queue N    requests waiting or running before 429 (env LLM_SERVER_MAX_QUEUE, default 32)",
        "  --chat-wrapper W jinja: the GGUF's own chat template (default); auto: node-llama-cpp's choice",
        "                   (env LLM_SERVER_CHAT_WRAPPER)"
    ].join("\n");
}

function intOption(name, raw, min, max) {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max)
        throw new Error(`--${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(raw)}`);
    return n;
}

function readConfig(argv) {
    const { values } = parseArgs({
        args: argv,
        strict: true,
        allowPositionals: false,
        options: {
            model: { type: "string" },
            host: { type: "string" },
            port: { type: "string" },
            alias: { type: "string" },
            "ctx-size": { type: "string" },
            threads: { type: "string" },
            "max-queue": { type: "string" },
            "chat-wrapper": { type: "string" },
            help: { type: "boolean", short: "h" }
        }
    });
    if (values.help) {
        process.stdout.write(usage() + "\n");
        process.exit(0);
    }
    const env = process.env;
    const model = values.model ?? env.LLM_SERVER_MODEL;
    if (model == null || model === "")
        throw new Error("no model: pass --model PATH or set LLM_SERVER_MODEL");
    const alias = values.alias ?? env.LLM_SERVER_ALIAS ?? DEFAULT_ALIAS;
    if (alias === "")
        throw new Error("--alias must not be empty");
    const chatWrapper = values["chat-wrapper"] ?? env.LLM_SERVER_CHAT_WRAPPER ?? "jinja";
    if (!["jinja", "auto"].includes(chatWrapper))
        throw new Error(`--chat-wrapper must be jinja or auto, got ${JSON.stringify(chatWrapper)}`);
    return {
        model,
        alias,
        chatWrapper,
        host: values.host ?? env.LLM_SERVER_HOST ?? "127.0.0.1",
        port: intOption("port", values.port ?? env.LLM_SERVER_PORT ?? "0", 0, 65535),
        ctxSize: intOption("ctx-size", values["ctx-size"] ?? env.LLM_SERVER_CTX_SIZE ?? "4096", 256, 131072),
        threads: intOption("threads", values.threads ?? env.LLM_SERVER_THREADS ?? "1", 1, 256),
        maxQueue: intOption("max-queue", values["max-queue"] ?? env.LLM_SERVER_MAX_QUEUE ?? "32", 1, 100000)
    };
}

// ---------------------------------------------------------------------------------------------
// Errors answered to the client, in OpenAI's shape.

class ApiError extends Error {
    constructor(status, message, { type = "invalid_request_error", code = null, param = null, headers = {} } = {}) {
        super(message);
        this.status = status;
        this.type = type;
        this.code = code;
        this.param = param;
        this.headers = headers;
    }
}

const badRequest = (message, param = null, code = "invalid_value") =>
    new ApiError(400, message, { param, code });

// ---------------------------------------------------------------------------------------------
// JSON Schema -> the subset node-llama-cpp's grammar builder honours.
//
// llama.createGrammarForJsonSchema() accepts any input and silently ignores what it does not know
// (an unknown type becomes `null`, `{}` becomes `null`, `pattern` or `minimum` are dropped), so a
// schema it cannot enforce would give output that does not match it. This check rejects such a
// schema with a 400 instead, and rewrites the common equivalents (anyOf, type arrays with object
// or array members, `definitions`) into the forms the builder knows.

class SchemaError extends Error {}

const ANNOTATIONS = new Set([
    "description", "title", "$schema", "$id", "$comment", "default", "examples", "deprecated",
    "readOnly", "writeOnly"
]);
const ALL_TYPES = new Set(["string", "number", "integer", "boolean", "null", "object", "array"]);
const KEYS_BY_TYPE = {
    string: new Set(["minLength", "maxLength", "format"]),
    number: new Set(),
    integer: new Set(),
    boolean: new Set(),
    null: new Set(),
    object: new Set(["properties", "additionalProperties", "required", "minProperties", "maxProperties"]),
    array: new Set(["items", "prefixItems", "minItems", "maxItems"])
};
const STRING_FORMATS = new Set(["date-time", "time", "date"]);
const DEFS_PREFIX = "#/$defs/";

function isPlainObject(value) {
    return value != null && typeof value === "object" && !Array.isArray(value);
}

function isPrimitive(value) {
    return value === null || ["string", "number", "boolean"].includes(typeof value);
}

function typeOfPrimitive(value) {
    if (value === null) return "null";
    if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
    return typeof value;
}

function checkNonNegativeInt(schema, key, path) {
    if (schema[key] !== undefined && !(Number.isInteger(schema[key]) && schema[key] >= 0))
        throw new SchemaError(`${path}.${key} must be a non-negative integer`);
}

function normalizeJsonSchema(root) {
    if (!isPlainObject(root))
        throw new SchemaError("the schema must be a JSON object");
    return normalizeNode(root, "$", new Set());
}

// Moves `definitions` to `$defs`, and normalizes every definition with the names in scope.
function normalizeDefs(schema, path, scopeNames) {
    if (schema.$defs !== undefined && schema.definitions !== undefined)
        throw new SchemaError(`${path} has both $defs and definitions`);
    const defs = schema.$defs ?? schema.definitions;
    if (defs === undefined)
        return { defs: undefined, names: scopeNames };
    if (!isPlainObject(defs))
        throw new SchemaError(`${path}.$defs must be an object`);
    const names = new Set([...scopeNames, ...Object.keys(defs)]);
    const out = {};
    for (const [name, def] of Object.entries(defs))
        out[name] = normalizeNode(def, `${path}.$defs.${name}`, names);
    return { defs: out, names };
}

function checkKeys(schema, allowed, path, what) {
    for (const key of Object.keys(schema)) {
        if (!ANNOTATIONS.has(key) && !allowed.has(key))
            throw new SchemaError(`unsupported JSON Schema keyword "${key}" at ${path} (${what}); ` +
                "the grammar could not enforce it");
    }
}

function normalizeNode(schema, path, scopeNames) {
    if (!isPlainObject(schema))
        throw new SchemaError(`${path} must be a schema object`);

    const { defs, names } = normalizeDefs(schema, path, scopeNames);
    const withDefs = (node) => (defs === undefined ? node : { ...node, $defs: defs });
    const defKeys = new Set(["$defs", "definitions"]);

    // $ref
    if (schema.$ref !== undefined) {
        checkKeys(schema, new Set(["$ref", ...defKeys]), path, "$ref");
        let ref = schema.$ref;
        if (typeof ref !== "string")
            throw new SchemaError(`${path}.$ref must be a string`);
        if (ref.startsWith("#/definitions/"))
            ref = DEFS_PREFIX + ref.slice("#/definitions/".length);
        if (!ref.startsWith(DEFS_PREFIX) || !names.has(ref.slice(DEFS_PREFIX.length)))
            throw new SchemaError(`${path}.$ref ${JSON.stringify(schema.$ref)} does not name a definition ` +
                "in $defs (only \"#/$defs/NAME\" references are supported)");
        return withDefs({ $ref: ref });
    }

    // oneOf / anyOf (the grammar is an alternation either way)
    if (schema.oneOf !== undefined || schema.anyOf !== undefined) {
        if (schema.oneOf !== undefined && schema.anyOf !== undefined)
            throw new SchemaError(`${path} has both oneOf and anyOf`);
        const key = schema.oneOf !== undefined ? "oneOf" : "anyOf";
        checkKeys(schema, new Set([key, ...defKeys]), path, key);
        const alternatives = schema[key];
        if (!Array.isArray(alternatives) || alternatives.length === 0)
            throw new SchemaError(`${path}.${key} must be a non-empty array of schemas`);
        return withDefs({ oneOf: alternatives.map((alt, i) => normalizeNode(alt, `${path}.${key}[${i}]`, names)) });
    }

    // const / enum (with an optional, consistent type)
    if (schema.const !== undefined || schema.enum !== undefined) {
        if (schema.const !== undefined && schema.enum !== undefined)
            throw new SchemaError(`${path} has both const and enum`);
        const key = schema.const !== undefined ? "const" : "enum";
        checkKeys(schema, new Set([key, "type"]), path, key);
        const values = key === "const" ? [schema.const] : schema.enum;
        if (!Array.isArray(values) || values.length === 0 || !values.every(isPrimitive))
            throw new SchemaError(`${path}.${key} must hold strings, numbers, booleans or null ` +
                "(objects and arrays are not supported)");
        if (schema.type !== undefined) {
            const types = Array.isArray(schema.type) ? schema.type : [schema.type];
            for (const value of values) {
                const t = typeOfPrimitive(value);
                if (!types.includes(t) && !(t === "integer" && types.includes("number")))
                    throw new SchemaError(`${path}.${key} value ${JSON.stringify(value)} does not match type ` +
                        JSON.stringify(schema.type));
            }
        }
        return key === "const" ? { const: schema.const } : { enum: [...values] };
    }

    if (schema.type === undefined)
        throw new SchemaError(`${path} declares no type, enum, const, oneOf/anyOf or $ref ` +
            "(a schema that accepts any value is not supported)");

    // type: [..] -> a single type, or a oneOf over the types when any of them needs its own keywords
    if (Array.isArray(schema.type)) {
        const types = schema.type;
        if (types.length === 0 || new Set(types).size !== types.length || !types.every((t) => ALL_TYPES.has(t)))
            throw new SchemaError(`${path}.type must be a non-empty list of distinct JSON Schema types`);
        const allowed = new Set(["type", ...defKeys, ...types.flatMap((t) => [...KEYS_BY_TYPE[t]])]);
        checkKeys(schema, allowed, path, `type ${JSON.stringify(types)}`);
        if (types.length === 1)
            return normalizeNode({ ...schema, type: types[0] }, path, scopeNames);
        const hasTypeKeywords = Object.keys(schema).some((k) => !ANNOTATIONS.has(k) && k !== "type" && !defKeys.has(k));
        if (!hasTypeKeywords && !types.includes("object") && !types.includes("array"))
            return withDefs({ type: [...types] });
        const alternatives = types.map((t, i) => {
            const single = { type: t };
            for (const k of KEYS_BY_TYPE[t])
                if (schema[k] !== undefined) single[k] = schema[k];
            return normalizeNode(single, `${path}.type[${i}]`, names);
        });
        return withDefs({ oneOf: alternatives });
    }

    const type = schema.type;
    if (!ALL_TYPES.has(type))
        throw new SchemaError(`${path}.type ${JSON.stringify(type)} is not a JSON Schema type`);
    checkKeys(schema, new Set(["type", ...defKeys, ...KEYS_BY_TYPE[type]]), path, `type "${type}"`);

    if (type === "string") {
        checkNonNegativeInt(schema, "minLength", path);
        checkNonNegativeInt(schema, "maxLength", path);
        const out = { type };
        if (schema.format !== undefined) {
            if (!STRING_FORMATS.has(schema.format))
                throw new SchemaError(`${path}.format ${JSON.stringify(schema.format)} is not supported ` +
                    `(supported: ${[...STRING_FORMATS].join(", ")})`);
            if (schema.minLength !== undefined || schema.maxLength !== undefined)
                throw new SchemaError(`${path}: format cannot be combined with minLength/maxLength`);
            out.format = schema.format;
        }
        if (schema.minLength !== undefined) out.minLength = schema.minLength;
        if (schema.maxLength !== undefined) out.maxLength = schema.maxLength;
        if (out.minLength !== undefined && out.maxLength !== undefined && out.maxLength < out.minLength)
            throw new SchemaError(`${path}: maxLength is smaller than minLength`);
        return out;
    }

    if (type === "object") {
        const out = { type };
        const properties = schema.properties ?? {};
        if (!isPlainObject(properties))
            throw new SchemaError(`${path}.properties must be an object`);
        out.properties = {};
        for (const [name, propSchema] of Object.entries(properties))
            out.properties[name] = normalizeNode(propSchema, `${path}.properties.${name}`, names);
        // The grammar always writes every declared property, so any `required` list over declared
        // properties holds; a required name that is not declared could not be guaranteed.
        if (schema.required !== undefined) {
            if (!Array.isArray(schema.required) || !schema.required.every((k) => typeof k === "string"))
                throw new SchemaError(`${path}.required must be an array of strings`);
            const missing = schema.required.filter((k) => !Object.hasOwn(out.properties, k));
            if (missing.length > 0)
                throw new SchemaError(`${path}.required names properties that are not declared: ${missing.join(", ")}`);
        }
        const additional = schema.additionalProperties;
        if (additional !== undefined && additional !== false) {
            if (additional === true) out.additionalProperties = true;
            else out.additionalProperties = normalizeNode(additional, `${path}.additionalProperties`, names);
        }
        checkNonNegativeInt(schema, "minProperties", path);
        checkNonNegativeInt(schema, "maxProperties", path);
        const declared = Object.keys(out.properties).length;
        if (schema.maxProperties !== undefined) {
            if (schema.maxProperties < declared)
                throw new SchemaError(`${path}.maxProperties is smaller than the number of declared properties ` +
                    "(the grammar writes all of them)");
            if (out.additionalProperties !== undefined) out.maxProperties = schema.maxProperties;
        }
        if (schema.minProperties !== undefined && schema.minProperties > declared) {
            if (out.additionalProperties === undefined)
                throw new SchemaError(`${path}.minProperties exceeds the declared properties and ` +
                    "additionalProperties is false");
            out.minProperties = schema.minProperties;
        }
        return withDefs(out);
    }

    if (type === "array") {
        const out = { type };
        let prefixCount = 0;
        if (schema.prefixItems !== undefined) {
            if (!Array.isArray(schema.prefixItems))
                throw new SchemaError(`${path}.prefixItems must be an array of schemas`);
            out.prefixItems = schema.prefixItems.map((s, i) => normalizeNode(s, `${path}.prefixItems[${i}]`, names));
            prefixCount = out.prefixItems.length;
        }
        checkNonNegativeInt(schema, "minItems", path);
        checkNonNegativeInt(schema, "maxItems", path);
        let maxItems = schema.maxItems;
        if (schema.items === false) {
            // no items beyond prefixItems
            maxItems = Math.min(maxItems ?? prefixCount, prefixCount);
        } else if (schema.items !== undefined && schema.items !== true) {
            if (Array.isArray(schema.items))
                throw new SchemaError(`${path}.items as an array (draft 4 tuples) is not supported; use prefixItems`);
            out.items = normalizeNode(schema.items, `${path}.items`, names);
        }
        // Without `items`, items past prefixItems are any JSON value (the grammar's "any" rule).
        if (maxItems !== undefined && maxItems < prefixCount)
            throw new SchemaError(`${path}.maxItems is smaller than the number of prefixItems`);
        if (schema.minItems !== undefined) out.minItems = schema.minItems;
        if (maxItems !== undefined) out.maxItems = maxItems;
        if (out.minItems !== undefined && out.maxItems !== undefined && out.maxItems < out.minItems)
            throw new SchemaError(`${path}: maxItems is smaller than minItems`);
        return withDefs(out);
    }

    return { type }; // number, integer, boolean, null
}

// ---------------------------------------------------------------------------------------------
// Request validation: OpenAI's chat.completions request shape -> generation options.

function messageText(content, path) {
    if (typeof content === "string")
        return content;
    if (Array.isArray(content)) {
        return content.map((part, i) => {
            if (!isPlainObject(part) || part.type !== "text" || typeof part.text !== "string")
                throw badRequest(`${path}[${i}]: only {"type":"text","text":...} content parts are supported`, path);
            return part.text;
        }).join("");
    }
    throw badRequest(`${path} must be a string (or an array of text parts)`, path);
}

function toChatHistory(messages) {
    if (!Array.isArray(messages) || messages.length === 0)
        throw badRequest("messages must be a non-empty array", "messages", messages === undefined ? "missing_required_parameter" : "invalid_value");
    const history = [];
    messages.forEach((message, i) => {
        const path = `messages[${i}]`;
        if (!isPlainObject(message))
            throw badRequest(`${path} must be an object`, path);
        const { role } = message;
        if (message.tool_calls != null || message.function_call != null)
            throw badRequest(`${path}: tool calls are not supported`, path);
        const text = messageText(message.content, `${path}.content`);
        if (role === "system" || role === "developer")
            history.push({ type: "system", text });
        else if (role === "user")
            history.push({ type: "user", text });
        else if (role === "assistant")
            history.push({ type: "model", response: [text] });
        else
            throw badRequest(`${path}.role must be one of system, developer, user, assistant; got ${JSON.stringify(role)}`, `${path}.role`);
    });
    // The answer is always a new assistant message, as with OpenAI.
    history.push({ type: "model", response: [] });
    return history;
}

function optionalNumber(body, key, min, max) {
    const value = body[key];
    if (value == null)
        return undefined;
    if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max)
        throw badRequest(`${key} must be a number in [${min}, ${max}]`, key);
    return value;
}

function parseRequest(body) {
    if (!isPlainObject(body))
        throw badRequest("the request body must be a JSON object", null, "invalid_json");
    if (body.model != null && typeof body.model !== "string")
        throw badRequest("model must be a string", "model");
    if (body.stream === true)
        throw badRequest("stream is not supported by this server", "stream", "unsupported_parameter");
    if (body.n != null && body.n !== 1)
        throw badRequest("n must be 1", "n", "unsupported_parameter");
    if (Array.isArray(body.tools) && body.tools.length > 0)
        throw badRequest("tools are not supported by this server", "tools", "unsupported_parameter");
    if (body.functions != null)
        throw badRequest("functions are not supported by this server", "functions", "unsupported_parameter");
    if (body.logprobs === true)
        throw badRequest("logprobs are not supported by this server", "logprobs", "unsupported_parameter");

    const history = toChatHistory(body.messages);

    const temperature = optionalNumber(body, "temperature", 0, 2) ?? 0;
    const topP = optionalNumber(body, "top_p", 0, 1);
    const frequencyPenalty = optionalNumber(body, "frequency_penalty", -2, 2);
    const presencePenalty = optionalNumber(body, "presence_penalty", -2, 2);

    let seed;
    if (body.seed != null) {
        if (!Number.isSafeInteger(body.seed))
            throw badRequest("seed must be an integer", "seed");
        seed = ((body.seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
    }

    const maxTokensKey = body.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
    let maxTokens = DEFAULT_MAX_TOKENS;
    if (body[maxTokensKey] != null) {
        if (!Number.isInteger(body[maxTokensKey]) || body[maxTokensKey] < 1)
            throw badRequest(`${maxTokensKey} must be a positive integer`, maxTokensKey);
        maxTokens = Math.min(body[maxTokensKey], MAX_TOKENS_CAP);
    }

    let stop;
    if (body.stop != null) {
        stop = typeof body.stop === "string" ? [body.stop] : body.stop;
        if (!Array.isArray(stop) || stop.length > 4 || !stop.every((s) => typeof s === "string" && s.length > 0))
            throw badRequest("stop must be a non-empty string or an array of at most 4 non-empty strings", "stop");
    }

    let format = { type: "text" };
    const rf = body.response_format;
    if (rf != null) {
        if (!isPlainObject(rf) || typeof rf.type !== "string")
            throw badRequest("response_format must be an object with a type", "response_format");
        if (rf.type === "text" || rf.type === "json_object") {
            format = { type: rf.type };
        } else if (rf.type === "json_schema") {
            const js = rf.json_schema;
            if (!isPlainObject(js))
                throw badRequest("response_format.json_schema must be an object", "response_format.json_schema");
            if (js.name != null && typeof js.name !== "string")
                throw badRequest("response_format.json_schema.name must be a string", "response_format.json_schema.name");
            let schema;
            try {
                schema = normalizeJsonSchema(js.schema);
            } catch (err) {
                if (err instanceof SchemaError)
                    throw badRequest(`response_format.json_schema.schema: ${err.message}`, "response_format.json_schema.schema", "invalid_json_schema");
                throw err;
            }
            format = { type: "json_schema", schema };
        } else {
            throw badRequest(`response_format.type must be one of text, json_object, json_schema; got ${JSON.stringify(rf.type)}`, "response_format.type");
        }
    }

    // llama.cpp-server extension: repeat_penalty (1 = off). OpenAI's frequency/presence penalties
    // map onto the same sampler. With none of them set, no penalty applies (as with OpenAI).
    const penalty = optionalNumber(body, "repeat_penalty", 0, 2);
    let repeatPenalty = false;
    if ((penalty != null && penalty !== 1) || frequencyPenalty || presencePenalty)
        repeatPenalty = { penalty: penalty ?? 1, frequencyPenalty, presencePenalty };

    return { history, temperature, topP, seed, maxTokens, stop, format, repeatPenalty };
}

// ---------------------------------------------------------------------------------------------
// The model, and one generation at a time.

async function loadRuntime(config) {
    const t0 = performance.now();
    const llama = await getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        skipDownload: true,
        progressLogs: false,
        maxThreads: config.threads,
        logLevel: LlamaLogLevel.warn,
        logger: (level, message) => process.stderr.write(`[llama.cpp ${level}] ${message.trimEnd()}\n`)
    });
    const model = await llama.loadModel({ modelPath: config.model, gpuLayers: 0 });
    const context = await model.createContext({
        contextSize: config.ctxSize,
        sequences: 1,
        threads: config.threads
    });
    // The prompt format, resolved once. By default the GGUF's own Jinja chat template: for SmolLM2
    // node-llama-cpp's "auto" choice (its ChatML wrapper) starts every prompt with an extra
    // <|im_start|> (the model's BOS token, which the GGUF says not to add) and drops the template's
    // default system message; `--chat-wrapper auto` keeps node-llama-cpp's choice anyway.
    const hasTemplate = typeof model.fileInfo.metadata?.tokenizer?.chat_template === "string";
    const chatWrapper = config.chatWrapper === "jinja" && hasTemplate
        ? resolveChatWrapper(model, { type: "jinjaTemplate" })
        : resolveChatWrapper(model);
    const jsonGrammar = await llama.getGrammarFor("json");
    const ms = Math.round(performance.now() - t0);
    log(`loaded ${config.model} in ${ms} ms: ${model.trainContextSize} train ctx, context ${context.contextSize} tokens, ` +
        `${config.threads} thread(s), chat template ${chatWrapper.wrapperName}, backend ${llama.gpu || "cpu"} (${llama.buildType})`);
    return { llama, model, context, chatWrapper, jsonGrammar };
}

function createGenerator(runtime, config) {
    const { llama, model, context, chatWrapper, jsonGrammar } = runtime;
    const schemaGrammars = new Map(); // JSON of the normalized schema -> grammar (small LRU)

    async function grammarFor(format) {
        if (format.type === "text") return undefined;
        if (format.type === "json_object") return jsonGrammar;
        const key = JSON.stringify(format.schema);
        let grammar = schemaGrammars.get(key);
        if (grammar === undefined) {
            try {
                grammar = await llama.createGrammarForJsonSchema(format.schema);
            } catch (err) {
                throw badRequest(`response_format.json_schema.schema: the grammar builder refused it: ${err.message}`,
                    "response_format.json_schema.schema", "invalid_json_schema");
            }
            if (schemaGrammars.size >= 32) schemaGrammars.delete(schemaGrammars.keys().next().value);
        } else {
            schemaGrammars.delete(key);
        }
        schemaGrammars.set(key, grammar);
        return grammar;
    }

    // Runs outside the queue (cheap): validates the grammar and counts the prompt's tokens.
    async function prepare(request) {
        const grammar = await grammarFor(request.format);
        const { contextText } = chatWrapper.generateContextState({ chatHistory: request.history });
        const promptTokens = contextText.tokenize(model.tokenizer).length;
        const room = context.contextSize - promptTokens - 1;
        if (room < 1)
            throw new ApiError(400, `the prompt is ${promptTokens} tokens, which leaves no room in the ` +
                `${context.contextSize}-token context`, { code: "context_length_exceeded", param: "messages" });
        return { grammar, promptTokens, maxTokens: Math.min(request.maxTokens, room) };
    }

    // Runs inside the queue: a fresh sequence per request, disposed afterwards.
    async function generate(request, prepared, signal) {
        const sequence = context.getSequence();
        const chat = new LlamaChat({ contextSequence: sequence, chatWrapper, autoDisposeSequence: true });
        try {
            let completionTokens = 0;
            const result = await chat.generateResponse(request.history, {
                maxTokens: prepared.maxTokens,
                temperature: request.temperature,
                seed: request.temperature > 0 ? (request.seed ?? Math.floor(Math.random() * 2 ** 32)) : undefined,
                topP: request.topP,
                grammar: prepared.grammar,
                customStopTriggers: request.stop,
                repeatPenalty: request.repeatPenalty,
                signal,
                onToken: (tokens) => { completionTokens += tokens.length; }
            });
            const stopReason = result.metadata.stopReason;
            let content = result.response;
            if (prepared.grammar !== undefined)
                content = content.trim();
            if (request.format.type === "json_schema" && stopReason !== "maxTokens") {
                // The grammar guarantees this; a failure here would be a bug worth seeing in the log.
                try { prepared.grammar.parse(content); } catch (err) {
                    log(`warning: json_schema output did not validate: ${err.message}: ${JSON.stringify(content)}`);
                }
            }
            return {
                content,
                finishReason: stopReason === "maxTokens" ? "length" : "stop",
                promptTokens: prepared.promptTokens,
                completionTokens
            };
        } finally {
            chat.dispose({ disposeSequence: true });
            if (!sequence.disposed) sequence.dispose();
        }
    }

    return { prepare, generate };
}

// One request at a time: a promise chain with a bound on how many may wait.
function createQueue(maxQueue) {
    let tail = Promise.resolve();
    let pending = 0;
    return {
        get pending() { return pending; },
        get idle() { return tail; },
        run(task) {
            if (pending >= maxQueue)
                throw new ApiError(429, `the server is busy (${pending} requests queued); retry later`,
                    { type: "rate_limit_error", code: "queue_full" });
            pending++;
            const result = tail.then(task).finally(() => { pending--; });
            tail = result.catch(() => {});
            return result;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// HTTP

function sendJson(res, status, payload, headers = {}) {
    if (res.headersSent || res.destroyed) return;
    const body = JSON.stringify(payload);
    res.writeHead(status, {
        "content-type": "application/json; charset=utf-8",
        "content-length": Buffer.byteLength(body),
        ...headers
    });
    res.end(body);
}

function sendError(res, err) {
    if (err instanceof ApiError) {
        sendJson(res, err.status, { error: { message: err.message, type: err.type, param: err.param, code: err.code } }, err.headers);
    } else {
        log(`internal error: ${err?.stack ?? err}`);
        sendJson(res, 500, { error: { message: `internal error: ${err?.message ?? err}`, type: "server_error", param: null, code: "internal_error" } });
    }
}

function readBody(req) {
    return new Promise((resolve, reject) => {
        const declared = Number(req.headers["content-length"]);
        const tooLarge = () => new ApiError(413, `the request body is larger than ${MAX_BODY_BYTES} bytes`,
            { code: "request_too_large", headers: { connection: "close" } });
        if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) {
            req.resume(); // drain and discard
            reject(tooLarge());
            return;
        }
        const chunks = [];
        let size = 0;
        let failed = false;
        req.on("data", (chunk) => {
            if (failed) return;
            size += chunk.length;
            if (size > MAX_BODY_BYTES) {
                failed = true;
                chunks.length = 0;
                reject(tooLarge());
                return;
            }
            chunks.push(chunk);
        });
        req.on("end", () => { if (!failed) resolve(Buffer.concat(chunks)); });
        req.on("error", (err) => { if (!failed) { failed = true; reject(err); } });
    });
}

function parseJsonBody(buffer) {
    const text = buffer.toString("utf8");
    if (text.trim() === "")
        throw badRequest("the request body is empty; expected a JSON object", null, "invalid_json");
    try {
        return JSON.parse(text);
    } catch (err) {
        throw badRequest(`the request body is not valid JSON: ${err.message}`, null, "invalid_json");
    }
}

function createHandler({ config, generator, queue, state }) {
    const modelObject = () => ({ id: config.alias, object: "model", created: state.startedAt, owned_by: "local" });
    const routes = {
        "/health": { GET: (req, res) => sendJson(res, 200, { status: "ok", model: config.alias }) },
        "/v1/models": { GET: (req, res) => sendJson(res, 200, { object: "list", data: [modelObject()] }) },
        [`/v1/models/${config.alias}`]: { GET: (req, res) => sendJson(res, 200, modelObject()) },
        "/v1/chat/completions": { POST: chatCompletions }
    };

    async function chatCompletions(req, res) {
        const started = performance.now();
        const body = parseJsonBody(await readBody(req));
        const request = parseRequest(body);
        const prepared = await generator.prepare(request);

        // Abort the generation if the client goes away or the server stops.
        const abort = new AbortController();
        const onClose = () => { if (!res.writableEnded) abort.abort(new Error("client disconnected")); };
        res.on("close", onClose);
        const onStop = () => abort.abort(new Error("server stopping"));
        state.stopping.addEventListener("abort", onStop, { once: true });
        try {
            const queued = performance.now();
            const result = await queue.run(async () => {
                if (abort.signal.aborted || state.stopping.aborted)
                    throw new ApiError(503, "the server is stopping or the client went away", { type: "server_error", code: "unavailable" });
                const t = performance.now();
                const r = await generator.generate(request, prepared, abort.signal);
                r.waitMs = t - queued;
                r.genMs = performance.now() - t;
                return r;
            });
            const id = `chatcmpl-${randomUUID().replaceAll("-", "")}`;
            sendJson(res, 200, {
                id,
                object: "chat.completion",
                created: Math.floor(Date.now() / 1000),
                model: config.alias,
                system_fingerprint: null,
                choices: [{
                    index: 0,
                    message: { role: "assistant", content: result.content, refusal: null },
                    logprobs: null,
                    finish_reason: result.finishReason
                }],
                usage: {
                    prompt_tokens: result.promptTokens,
                    completion_tokens: result.completionTokens,
                    total_tokens: result.promptTokens + result.completionTokens
                }
            });
            log(`${id} ${request.format.type} prompt=${result.promptTokens} completion=${result.completionTokens} ` +
                `finish=${result.finishReason} wait=${Math.round(result.waitMs)}ms gen=${Math.round(result.genMs)}ms ` +
                `total=${Math.round(performance.now() - started)}ms`);
        } catch (err) {
            if (abort.signal.aborted && !(err instanceof ApiError))
                throw new ApiError(503, `generation aborted: ${abort.signal.reason?.message ?? "aborted"}`, { type: "server_error", code: "aborted" });
            throw err;
        } finally {
            res.off("close", onClose);
            state.stopping.removeEventListener("abort", onStop);
        }
    }

    return async function handle(req, res) {
        req.on("error", () => {});
        res.on("error", () => {});
        state.active++;
        res.once("close", () => { state.active--; if (state.active === 0) state.onIdle?.(); });
        let path;
        try {
            path = new URL(req.url, "http://localhost").pathname;
        } catch {
            sendError(res, new ApiError(400, "malformed request URL", { code: "invalid_url" }));
            return;
        }
        try {
            const route = routes[path];
            if (route === undefined)
                throw new ApiError(404, `unknown path ${path}`, { code: "unknown_url" });
            const method = req.method === "HEAD" && route.GET ? "GET" : req.method;
            const handler = route[method];
            if (handler === undefined)
                throw new ApiError(405, `method ${req.method} is not allowed on ${path}`,
                    { code: "method_not_allowed", headers: { allow: Object.keys(route).join(", ") } });
            if (state.stopping.aborted)
                throw new ApiError(503, "the server is stopping", { type: "server_error", code: "unavailable" });
            await handler(req, res);
        } catch (err) {
            if (err instanceof ApiError && err.status >= 500 || !(err instanceof ApiError))
                log(`${req.method} ${path} -> ${err instanceof ApiError ? err.status : 500}: ${err.message}`);
            sendError(res, err);
        } finally {
            // A body nobody read (GET with a body, early errors) must not stall the connection.
            if (!req.complete) req.resume();
        }
    };
}

// ---------------------------------------------------------------------------------------------

async function main() {
    let config;
    try {
        config = readConfig(process.argv.slice(2));
    } catch (err) {
        process.stderr.write(`${err.message}\n\n${usage()}\n`);
        process.exit(2);
    }

    const stopController = new AbortController();
    const state = { stopping: stopController.signal, startedAt: Math.floor(Date.now() / 1000), active: 0, onIdle: null };
    const queue = createQueue(config.maxQueue);
    let runtime;
    let server;

    let stopCalls = 0;
    async function stop(signal) {
        stopCalls++;
        if (stopCalls > 1) {
            log(`${signal} again: exiting now`);
            process.exit(130);
        }
        log(`${signal}: stopping`);
        stopController.abort();
        const deadline = setTimeout(() => { log("shutdown took too long: exiting"); process.exit(1); }, 10000);
        deadline.unref();
        try {
            if (server) {
                const closed = new Promise((resolve) => server.close(resolve));
                server.closeIdleConnections();
                await queue.idle;
                // Let every answer (the 503s to aborted and queued requests included) reach its client.
                if (state.active > 0)
                    await new Promise((resolve) => { state.onIdle = resolve; });
                server.closeAllConnections();
                await closed;
            }
            if (runtime) {
                await runtime.context.dispose();
                await runtime.model.dispose();
                await runtime.llama.dispose();
            }
        } catch (err) {
            log(`error while stopping: ${err?.stack ?? err}`);
            process.exit(1);
        }
        log("stopped");
        process.exit(0);
    }
    process.on("SIGTERM", () => void stop("SIGTERM"));
    process.on("SIGINT", () => void stop("SIGINT"));

    try {
        runtime = await loadRuntime(config);
    } catch (err) {
        log(`could not load the model ${config.model}: ${err?.stack ?? err}`);
        process.exit(1);
    }
    if (stopController.signal.aborted) return;
    const generator = createGenerator(runtime, config);

    server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 5000 },
        createHandler({ config, generator, queue, state }));
    server.on("clientError", (err, socket) => {
        if (socket.writable)
            socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
        else socket.destroy();
    });
    server.on("error", (err) => {
        log(`server error: ${err.message}`);
        process.exit(1);
    });
    server.listen(config.port, config.host, () => {
        const { address, port } = server.address();
        const host = address.includes(":") ? `[${address}]` : address;
        process.stdout.write(`listening on http://${host}:${port}\n`);
    });
}

await main();
