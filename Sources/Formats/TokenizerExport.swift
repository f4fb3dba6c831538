import Foundation

extension BPETokenizer {
    /// Writes the tokenizer as Hugging Face files, `tokenizer.json` and `tokenizer_config.json`,
    /// into `directory` (created if missing), so a checkpoint directory carries its own tokenizer
    /// for both `Checkpoint.loadTokenizer()` and transformers' `AutoTokenizer`.
    ///
    /// The sections are the ones transformers builds for the same kind of tokenizer (its GPT-2 /
    /// Qwen2 converters), so the files give the ids `encode` gives. Merges are written in rank
    /// order. `tokenizer_config.json` names the BOS/EOS/pad tokens when their ids are known, adds
    /// no BOS, and carries `chatTemplate` as a ChatML Jinja template that
    /// `ChatTemplate.detect(chatTemplateJinja:)` recognises. `modelMaxLength` is written when given.
    package func writeHuggingFaceFiles(to directory: URL, chatTemplate: ChatTemplate, modelMaxLength: Int? = nil) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.writeJSON(tokenizerJSON(), to: directory.appendingPathComponent("tokenizer.json"))
        try Self.writeJSON(tokenizerConfigJSON(chatTemplate: chatTemplate, modelMaxLength: modelMaxLength),
                           to: directory.appendingPathComponent("tokenizer_config.json"))
    }

    /// The tokenizer.json object.
    func tokenizerJSON() -> [String: Any] {
        let null = NSNull()
        let added: [[String: Any]] = addedTokens.map {
            ["id": $0.id, "content": $0.content, "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": $0.special]
        }
        // Last id wins for a repeated token string, as in the lookup table `encode` uses.
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() where !token.isEmpty { vocab[token] = id }
        // The merge table is keyed by the pair's ids; rank order is the file order. (A merge
        // listed twice kept only its last rank when loaded, which is the one that ever applied.)
        let mergeList: [[String]] = merges
            .sorted { $0.value.rank < $1.value.rank }
            .map { [tokens[Int($0.key >> 32)], tokens[Int($0.key & 0xFFFF_FFFF)]] }

        return [
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizesNFC ? ["type": "NFC"] as [String: Any] : null,
            "pre_tokenizer": preTokenizerJSON(),
            "post_processor": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true] as [String: Any],
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true] as [String: Any],
            "model": [
                "type": "BPE",
                "dropout": null,
                "unk_token": unknownToken.map { $0 as Any } ?? null,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": byteFallback,
                "ignore_merges": ignoreMerges,
                "vocab": vocab,
                "merges": mergeList,
            ] as [String: Any],
        ]
    }

    /// The `pre_tokenizer` section for `preTokenizer`, as transformers' converters build it.
    func preTokenizerJSON() -> [String: Any] { Self.preTokenizerJSON(preTokenizer, addPrefixSpace: addPrefixSpace) }

    static func preTokenizerJSON(_ preTokenizer: PreTokenizer, addPrefixSpace: Bool) -> [String: Any] {
        func byteLevel(useRegex: Bool, trimOffsets: Bool = true) -> [String: Any] {
            ["type": "ByteLevel", "add_prefix_space": addPrefixSpace, "trim_offsets": trimOffsets, "use_regex": useRegex]
        }
        switch preTokenizer {
        case .gpt2(individualDigits: false):
            return byteLevel(useRegex: true)
        case .gpt2(individualDigits: true):
            return ["type": "Sequence", "pretokenizers": [
                ["type": "Digits", "individual_digits": true] as [String: Any],
                byteLevel(useRegex: true),
            ]]
        case .qwen2, .llama3:
            let pattern = PreTokenizer.splitPatterns.first { $0.value == preTokenizer }!.key
            return ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false] as [String: Any],
                byteLevel(useRegex: false, trimOffsets: false),
            ]]
        case .whole:
            return byteLevel(useRegex: false)
        }
    }

    /// The tokenizer_config.json object.
    func tokenizerConfigJSON(chatTemplate: ChatTemplate, modelMaxLength: Int?) -> [String: Any] {
        var config: [String: Any] = [
            "add_bos_token": false,
            "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
            "chat_template": chatTemplate.jinja,
            "tokenizer_class": "PreTrainedTokenizerFast",
        ]
        for (key, id) in [("bos_token", bosTokenId), ("eos_token", eosTokenId), ("pad_token", padTokenId)] {
            if let id, let token = token(of: id) { config[key] = token }
        }
        if let modelMaxLength { config["model_max_length"] = modelMaxLength }
        return config
    }

    private static func writeJSON(_ object: [String: Any], to url: URL) throws {
        let data: Data
        do {
            data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        } catch {
            throw FormatError(url.path, "cannot encode JSON (\(error.localizedDescription))")
        }
        do {
            try data.write(to: url, options: .atomic)
        } catch {
            throw FormatError(url.path, "cannot write (\(error.localizedDescription))")
        }
    }
}

extension ChatTemplate {
    /// This template as Jinja for transformers' `apply_chat_template`, in the shape of SmolLM2's
    /// own template: the default system message, if any, is added inside the message loop, so
    /// an empty conversation gets none (as `render` does). Newlines stand in the string
    /// literals as themselves, as in SmolLM2's file; for `.smolLM2` this is that template exactly.
    package var jinja: String {
        var text = "{% for message in messages %}"
        if let system = defaultSystemPrompt {
            text += "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
                + Self.jinjaEscaped(system) + "<|im_end|>\n' }}{% endif %}"
        }
        text += "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        text += "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
        return text
    }

    /// `s` as the inside of a single-quoted Jinja string literal.
    private static func jinjaEscaped(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "'", with: "\\'")
    }
}
