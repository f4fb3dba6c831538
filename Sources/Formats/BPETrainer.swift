import Foundation

/// Learns a small byte-level BPE tokenizer from a task's text and writes it as standard Hugging
/// Face files, which `BPETokenizer(tokenizerJSON:)` and transformers' `AutoTokenizer` both load.
///
/// - Pre-tokenizer: GPT-2's regex after isolating every digit (`Digits(individual_digits)` then
///   `ByteLevel`), so each digit is its own piece and no merge can ever join a digit to
///   anything: numbers are spelled digit by digit, the same way wherever they appear.
/// - Vocabulary: the 256 byte symbols (ids 0-255, in byte order, so any text encodes), then one
///   token per merge in the order learnt, then the special tokens (`<|endoftext|>` as EOS and
///   `<|pad|>` as padding by default) as added tokens.
/// - Merges: the most frequent adjacent pair over the pieces of the corpus, counted once per
///   occurrence, ties broken by the pair's spelling so training is deterministic; training
///   stops at `maxMerges` or when no pair occurs `minFrequency` times.
///
/// GGUF: the same tokenizer is llama.cpp's `tokenizer.ggml.model = "gpt2"` with
/// `tokenizer.ggml.pre = "smollm"` (GPT-2's regex with digits isolated), `tokenizer.ggml.tokens`
/// the vocabulary strings by id, `tokenizer.ggml.merges` the merges as "a b" strings in rank
/// order, `tokenizer.ggml.token_type` 1 (normal) for every token but the specials, which are 3
/// (control), and `tokenizer.ggml.eos_token_id` / `padding_token_id` their ids.
package struct BPETrainer: Sendable {
    package var maxMerges: Int
    package var minFrequency: Int
    package var endOfText: String
    package var padding: String

    package init(maxMerges: Int = 256, minFrequency: Int = 2, endOfText: String = "<|endoftext|>", padding: String = "<|pad|>") {
        self.maxMerges = maxMerges
        self.minFrequency = minFrequency
        self.endOfText = endOfText
        self.padding = padding
    }

    /// The result of training: the vocabulary by id and the merges in rank order.
    package struct Result: Sendable, Equatable {
        package var tokens: [String]
        package var merges: [(String, String)]
        package var endOfTextId: Int
        package var paddingId: Int

        package static func == (a: Result, b: Result) -> Bool {
            a.tokens == b.tokens && a.merges.map { [$0.0, $0.1] } == b.merges.map { [$0.0, $0.1] }
                && a.endOfTextId == b.endOfTextId && a.paddingId == b.paddingId
        }
    }

    package static let preTokenizer = PreTokenizer.gpt2(individualDigits: true)

    package func train(_ texts: [String]) -> Result {
        // Distinct pieces with their counts; each piece a list of symbols (token strings).
        var counts: [[UInt8]: Int] = [:]
        for text in texts {
            let scalars = Array(text.unicodeScalars)
            for range in Self.preTokenizer.split(scalars) {
                var bytes: [UInt8] = []
                for scalar in scalars[range] { UTF8.encode(scalar) { bytes.append($0) } }
                counts[bytes, default: 0] += 1
            }
        }
        let byteSymbols = (0..<256).map { ByteLevel.spell([UInt8($0)]) }
        let digitSymbols = Set((UInt8(ascii: "0")...UInt8(ascii: "9")).map { byteSymbols[Int($0)] })
        var words: [(symbols: [String], count: Int)] = counts
            .sorted { $0.key.lexicographicallyPrecedes($1.key) }
            .map { (bytes, n) in (bytes.map { byteSymbols[Int($0)] }, n) }

        var tokens = byteSymbols
        var known = Set(tokens)
        var merges: [(String, String)] = []
        while merges.count < maxMerges {
            var pairCounts: [String: (pair: (String, String), count: Int)] = [:]
            for word in words where word.symbols.count > 1 {
                for i in 0..<(word.symbols.count - 1) {
                    let a = word.symbols[i], b = word.symbols[i + 1]
                    // The pre-tokenizer already isolates digits; this keeps the promise even
                    // for a corpus whose digits are not ASCII-adjacent (defence in depth).
                    if digitSymbols.contains(a) || digitSymbols.contains(b) { continue }
                    let key = a + "\u{0}" + b
                    pairCounts[key, default: ((a, b), 0)].count += word.count
                }
            }
            guard let best = pairCounts.max(by: { x, y in
                x.value.count != y.value.count ? x.value.count < y.value.count : x.key > y.key
            }), best.value.count >= minFrequency else { break }
            let (a, b) = best.value.pair
            let merged = a + b
            merges.append((a, b))
            if known.insert(merged).inserted { tokens.append(merged) }
            for w in words.indices where words[w].symbols.count > 1 {
                var out: [String] = []
                var i = 0
                let s = words[w].symbols
                while i < s.count {
                    if i + 1 < s.count && s[i] == a && s[i + 1] == b {
                        out.append(merged)
                        i += 2
                    } else {
                        out.append(s[i])
                        i += 1
                    }
                }
                words[w].symbols = out
            }
        }
        let eos = tokens.count
        tokens.append(endOfText)
        tokens.append(padding)
        return Result(tokens: tokens, merges: merges, endOfTextId: eos, paddingId: eos + 1)
    }
}

extension BPETrainer.Result {
    /// The tokenizer.json object (the sections transformers writes for a GPT-2 style tokenizer
    /// with a Digits pre-tokenizer).
    package var tokenizerJSON: [String: Any] {
        let null = NSNull()
        var vocab: [String: Int] = [:]
        for (id, token) in tokens.enumerated() { vocab[token] = id }
        let specials = [endOfTextId, paddingId].map { id -> [String: Any] in
            ["id": id, "content": tokens[id], "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true]
        }
        return [
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": specials,
            "normalizer": null,
            "pre_tokenizer": BPETokenizer.preTokenizerJSON(BPETrainer.preTokenizer, addPrefixSpace: false),
            "post_processor": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true] as [String: Any],
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true] as [String: Any],
            "model": [
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges.map { [$0.0, $0.1] },
            ] as [String: Any],
        ]
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` (EOS and pad named, no BOS, plain
    /// ChatML template) into `directory` and returns the tokenizer loaded back from them.
    @discardableResult
    package func write(to directory: URL) throws -> BPETokenizer {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent("tokenizer.json")
        let data: Data
        do {
            data = try JSONSerialization.data(withJSONObject: tokenizerJSON, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            try data.write(to: url, options: .atomic)
        } catch {
            throw FormatError(url.path, "cannot write (\(error.localizedDescription))")
        }
        let tokenizer = try BPETokenizer(tokenizerJSON: url)
        tokenizer.eosTokenId = endOfTextId
        tokenizer.padTokenId = paddingId
        // Rewrites tokenizer.json in the exporter's canonical form beside the config.
        try tokenizer.writeHuggingFaceFiles(to: directory, chatTemplate: .chatML)
        return tokenizer
    }
}
