import Foundation
import Tensors

/// A byte-level BPE tokenizer (GPT-2 style: SmolLM2, Qwen), read from a GGUF file's metadata or
/// a Hugging Face tokenizer.json, giving the ids transformers gives.
///
/// Encoding: added tokens written in the text (`<|im_start|>`…) become their ids first; each
/// stretch between them is normalised (NFC for Qwen), cut into pieces by the pre-tokenizer, and
/// each piece's UTF-8 bytes, spelled as byte-level symbols, are merged pairwise in merge-rank
/// order. No BOS is added. Decoding maps tokens back to bytes and then to UTF-8 text.
///
/// Thread-safe: the only mutable state is the per-piece cache, behind a lock.
package final class BPETokenizer: @unchecked Sendable {
    package let vocabSize: Int
    /// Added tokens flagged special (control tokens), skipped by `decode(skipSpecial: true)`.
    package let specialTokens: [String: Int]
    /// From the GGUF metadata; a tokenizer.json does not carry them, so the caller sets them
    /// (from tokenizer_config.json or config.json).
    package var bosTokenId: Int?
    package var eosTokenId: Int?
    package var padTokenId: Int?
    /// A hash of every token string by id: two tokenizers with equal fingerprints give the
    /// same ids, which is what a teacher and its student must share.
    package var vocabularyFingerprint: UInt64 {
        var h = StableHash.fnvOffset
        for token in tokens {
            h = StableHash.fnv1a(token.utf8, from: h)
            h = StableHash.fnv1a(CollectionOfOne(0xFF), from: h)   // separator: "ab","c" differs from "a","bc"
        }
        return h
    }

    // Internal rather than private where TokenizerExport.swift reads them back.
    let tokens: [String]  // by id; "" where a vocabulary leaves an id unused
    private let ids: [String: Int]
    /// Merge rank and result, keyed by the pair of ids (`pairKey`).
    let merges: [UInt64: (rank: UInt32, id: Int)]
    /// The id of each single byte's symbol (nil if the vocabulary lacks it: the byte is dropped,
    /// as Hugging Face does without an unknown token).
    private let byteIds: [Int?]
    private let added: AddedTokenMatcher
    /// The added tokens as loaded, in file order.
    let addedTokens: [AddedToken]
    package let preTokenizer: PreTokenizer
    let normalizesNFC: Bool
    let addPrefixSpace: Bool
    /// Llama 3 style: a piece that is itself a token is not merged.
    let ignoreMerges: Bool
    let byteFallback: Bool
    let unknownToken: String?

    private let cacheLock = NSLock()
    /// Keyed by UTF-8 bytes, not String: Strings compare by canonical equivalence, so "Å"
    /// (U+212B) would find the ids of "Å" (U+00C5).
    private var cache: [[UInt8]: [Int]] = [:]
    private static let cacheLimit = 100_000

    /// One token the tokenizer matches in raw text before anything else.
    struct AddedToken { var content: String; var id: Int; var special: Bool }

    /// Everything both file kinds reduce to. `tokens` is indexed by id.
    private init(path: String, tokens: [String], merges: [(String, String)], added: [AddedToken],
                 preTokenizer: PreTokenizer, normalizesNFC: Bool = false, addPrefixSpace: Bool = false,
                 ignoreMerges: Bool = false, byteFallback: Bool = false, unknownToken: String? = nil) throws {
        var ids: [String: Int] = [:]
        ids.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() where !token.isEmpty { ids[token] = id }

        var table: [UInt64: (rank: UInt32, id: Int)] = [:]
        table.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            guard let left = ids[a], let right = ids[b], let merged = ids[a + b] else {
                throw FormatError(path, "merge \(rank) \"\(a) \(b)\" uses a token missing from the vocabulary")
            }
            // A repeated merge keeps its last rank, as in Hugging Face and GPT-2's encoder.py.
            table[Self.pairKey(left, right)] = (UInt32(rank), merged)
        }

        let unknownId = unknownToken.flatMap { ids[$0] }
        byteIds = (0..<256).map { b in
            ids[ByteLevel.spell([UInt8(b)])]
                ?? (byteFallback ? ids[String(format: "<0x%02X>", b)] : nil)
                ?? unknownId
        }
        self.tokens = tokens
        self.ids = ids
        self.merges = table
        self.added = AddedTokenMatcher(added)
        self.addedTokens = added
        self.specialTokens = Dictionary(added.filter(\.special).map { ($0.content, $0.id) }, uniquingKeysWith: { $1 })
        self.vocabSize = tokens.count
        self.preTokenizer = preTokenizer
        self.normalizesNFC = normalizesNFC
        self.addPrefixSpace = addPrefixSpace
        self.ignoreMerges = ignoreMerges
        self.byteFallback = byteFallback
        self.unknownToken = unknownToken
    }

    private static func pairKey(_ a: Int, _ b: Int) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }

    // MARK: - Lookup

    package func id(of token: String) -> Int? { ids[token] }

    package func token(of id: Int) -> String? {
        guard tokens.indices.contains(id), !tokens[id].isEmpty else { return nil }
        return tokens[id]
    }

    // MARK: - Encoding

    package func encode(_ text: String) -> [Int] {
        var out: [Int] = []
        let utf8 = Array(text.utf8)
        added.split(utf8) { segment in
            switch segment {
            case .token(let id): out.append(id)
            case .text(let range): encodeStretch(String(decoding: utf8[range], as: UTF8.self), into: &out)
            }
        }
        return out
    }

    /// Text with no added token in it.
    private func encodeStretch(_ raw: String, into out: inout [Int]) {
        var text = normalizesNFC ? raw.precomposedStringWithCanonicalMapping : raw
        if addPrefixSpace && text.utf8.first != UInt8(ascii: " ") { text = " " + text }
        let scalars = Array(text.unicodeScalars)
        for range in preTokenizer.split(scalars) {
            var bytes: [UInt8] = []
            for scalar in scalars[range] { UTF8.encode(scalar) { bytes.append($0) } }
            out += piece(bytes)
        }
    }

    /// The ids of one pre-tokenizer piece (its UTF-8 bytes), cached: prompts repeat words
    /// over and over.
    private func piece(_ bytes: [UInt8]) -> [Int] {
        if let hit = cacheLock.withLock({ cache[bytes] }) { return hit }
        let result: [Int]
        if ignoreMerges, let whole = ids[ByteLevel.spell(bytes)] {
            result = [whole]
        } else {
            result = merge(bytes.compactMap { byteIds[Int($0)] })
        }
        cacheLock.withLock {
            if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
            cache[bytes] = result
        }
        return result
    }

    /// Applies merges to a piece's symbols, lowest rank first and leftmost first among equal
    /// ranks (the order Hugging Face's BPE uses). Symbols live in a linked list so a merge is
    /// O(1), and candidate pairs in a heap keyed by (rank, position), so a long piece (a run of
    /// thousands of spaces) costs O(n log n) rather than a rescan per merge.
    private func merge(_ symbols: [Int]) -> [Int] {
        guard symbols.count > 1 else { return symbols }
        var id = symbols  // -1 once absorbed into the symbol on its left
        let none = symbols.count
        var next = Array(1...symbols.count)  // `none` past the last symbol
        var prev = Array(-1..<(symbols.count - 1))
        var queue = MinHeap()

        func pushPair(startingAt i: Int) {
            guard next[i] != none, let m = merges[Self.pairKey(id[i], id[next[i]])] else { return }
            queue.push(UInt64(m.rank) << 32 | UInt64(i))
        }
        for i in 0..<(symbols.count - 1) { pushPair(startingAt: i) }

        while let top = queue.pop() {
            let i = Int(top & 0xFFFF_FFFF), j = next[i]
            // Entries go stale when a neighbour merged first: check the pair still has this rank.
            guard id[i] >= 0, j != none, let m = merges[Self.pairKey(id[i], id[j])],
                  UInt64(m.rank) == top >> 32 else { continue }
            id[i] = m.id
            id[j] = -1
            next[i] = next[j]
            if next[j] != none { prev[next[j]] = i }
            if prev[i] >= 0 { pushPair(startingAt: prev[i]) }
            pushPair(startingAt: i)
        }
        return id.filter { $0 >= 0 }
    }

    // MARK: - Decoding

    package func decode(_ ids: [Int], skipSpecial: Bool = false) -> String {
        String(decoding: ids.flatMap { bytes(of: $0, skipSpecial: skipSpecial) }, as: UTF8.self)
    }

    /// What one id contributes to the output; unknown ids contribute nothing, as in Hugging Face.
    fileprivate func bytes(of id: Int, skipSpecial: Bool) -> [UInt8] {
        guard let token = token(of: id) else { return [] }
        if skipSpecial && specialTokens[token] == id { return [] }
        return ByteLevel.bytes(of: token)
    }
}

// MARK: - Loading

extension BPETokenizer {
    /// The tokenizer stored in a GGUF file (llama.cpp's `tokenizer.ggml.*` keys).
    ///
    /// Token types 3 (control) become special tokens and 4 (user-defined) plain added tokens;
    /// both are matched whole in the text.
    package convenience init(ggufMetadata meta: [String: GGUFValue], path: String) throws {
        let fix = "convert the model with llama.cpp's convert_hf_to_gguf.py, which embeds it"
        guard let model = meta["tokenizer.ggml.model"]?.string else {
            throw FormatError(path, "no tokenizer: tokenizer.ggml.model is missing; \(fix)")
        }
        guard model == "gpt2" else {
            let kinds = ["llama": "SentencePiece", "bert": "WordPiece", "t5": "Unigram", "rwkv": "RWKV"]
            throw FormatError(path, "tokenizer.ggml.model \"\(model)\"\(kinds[model].map { " (\($0))" } ?? "") is not supported; rqat reads byte-level BPE (\"gpt2\") tokenizers only")
        }
        func strings(_ key: String) throws -> [String] {
            let values = meta[key]?.array ?? []
            guard !values.isEmpty else { throw FormatError(path, "no tokenizer: \(key) is missing or empty; \(fix)") }
            return try values.map {
                guard let s = $0.string else { throw FormatError(path, "\(key) holds a non-string value") }
                return s
            }
        }
        let tokens = try strings("tokenizer.ggml.tokens")
        let merges = try strings("tokenizer.ggml.merges").enumerated().map { (rank, line) in
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw FormatError(path, "tokenizer.ggml.merges[\(rank)] \"\(line)\" is not two tokens") }
            return (String(parts[0]), String(parts[1]))
        }
        let types = meta["tokenizer.ggml.token_type"]?.array?.map { $0.int ?? 0 } ?? []
        let (control, userDefined) = (3, 4)
        let added = types.enumerated().compactMap { (id, type) -> AddedToken? in
            guard type == control || type == userDefined, id < tokens.count else { return nil }
            return AddedToken(content: tokens[id], id: id, special: type == control)
        }
        let preTokenizer = try PreTokenizer.gguf(name: meta["tokenizer.ggml.pre"]?.string, path: path)
        try self.init(path: path, tokens: tokens, merges: merges, added: added, preTokenizer: preTokenizer,
                      // transformers gives Qwen2 tokenizers an NFC normaliser, from GGUF too.
                      normalizesNFC: preTokenizer == .qwen2)
        bosTokenId = meta["tokenizer.ggml.bos_token_id"]?.int
        eosTokenId = meta["tokenizer.ggml.eos_token_id"]?.int
        padTokenId = meta["tokenizer.ggml.padding_token_id"]?.int
    }

    /// A Hugging Face tokenizer.json with a byte-level BPE model.
    package convenience init(tokenizerJSON url: URL) throws {
        let path = url.path
        guard let data = try? Data(contentsOf: url) else { throw FormatError(path, "cannot read tokenizer.json") }
        let root: [String: Any]
        do {
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw FormatError(path, "not a JSON object")
            }
            root = object
        } catch let error as FormatError {
            throw error
        } catch {
            throw FormatError(path, "invalid JSON (\(error.localizedDescription))")
        }
        guard let model = root["model"] as? [String: Any], let vocab = model["vocab"] as? [String: Int] else {
            throw FormatError(path, "no model.vocab")
        }
        let kind = model["type"] as? String ?? "BPE"
        guard kind == "BPE" else { throw FormatError(path, "model type \"\(kind)\" is not supported; rqat reads byte-level BPE only") }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let affix = model[key] as? String, !affix.isEmpty {
                throw FormatError(path, "model.\(key) \"\(affix)\" is not supported (not a byte-level BPE)")
            }
        }
        // Merges are "a b" strings in older files and [a, b] pairs in newer ones.
        let merges = try (model["merges"] as? [Any] ?? []).enumerated().map { (rank, entry) -> (String, String) in
            let parts = (entry as? [String]) ?? (entry as? String)?.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard let parts, parts.count == 2 else { throw FormatError(path, "model.merges[\(rank)] is not a pair of tokens") }
            return (parts[0], parts[1])
        }
        let added = try (root["added_tokens"] as? [[String: Any]] ?? []).map { entry in
            guard let content = entry["content"] as? String, let id = entry["id"] as? Int else {
                throw FormatError(path, "added_tokens entry without content and id")
            }
            return AddedToken(content: content, id: id, special: entry["special"] as? Bool ?? false)
        }

        // Tokens by id; added tokens may lie past the model vocabulary (Qwen's do).
        let size = max(vocab.values.max() ?? -1, added.map(\.id).max() ?? -1) + 1
        var tokens = [String](repeating: "", count: size)
        for (token, id) in vocab where id >= 0 { tokens[id] = token }
        for token in added where token.id >= 0 { tokens[token.id] = token.content }

        let (preTokenizer, addPrefixSpace) = try PreTokenizer.tokenizerJSON(root["pre_tokenizer"], path: path)
        let decoder = (root["decoder"] as? [String: Any])?["type"] as? String
        guard decoder == "ByteLevel" else {
            throw FormatError(path, "decoder \(decoder.map { "\"\($0)\"" } ?? "missing") is not supported; rqat reads byte-level BPE (ByteLevel decoder) only")
        }
        try self.init(path: path, tokens: tokens, merges: merges, added: added, preTokenizer: preTokenizer,
                      normalizesNFC: try Self.normalizesNFC(root["normalizer"], path: path),
                      addPrefixSpace: addPrefixSpace,
                      ignoreMerges: model["ignore_merges"] as? Bool ?? false,
                      byteFallback: model["byte_fallback"] as? Bool ?? false,
                      unknownToken: model["unk_token"] as? String)
    }

    /// Whether a tokenizer.json `normalizer` is NFC; no normaliser (or an empty sequence) is
    /// false, and anything else is not supported.
    private static func normalizesNFC(_ section: Any?, path: String) throws -> Bool {
        guard let section = section as? [String: Any] else { return false }
        let steps = section["type"] as? String == "Sequence" ? section["normalizers"] as? [[String: Any]] ?? [] : [section]
        let types = steps.map { $0["type"] as? String ?? "?" }
        guard types.allSatisfy({ $0 == "NFC" }) else {
            throw FormatError(path, "normalizer [\(types.joined(separator: ", "))] is not supported (only NFC)")
        }
        return !types.isEmpty
    }
}

// MARK: - Streaming

/// Turns generated ids into text as they arrive. A byte-level token can end in the middle of
/// a UTF-8 character (an emoji often spans two tokens), so the bytes of an unfinished
/// character are held back until the token that completes it. The pieces returned add up to
/// exactly what `decode` gives for all the ids at once.
package struct StreamingDecoder {
    private let tokenizer: BPETokenizer
    private let skipSpecial: Bool
    private var pending: [UInt8] = []

    package init(tokenizer: BPETokenizer, skipSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecial = skipSpecial
    }

    /// The text completed by `id` (empty while a character is still unfinished).
    package mutating func push(_ id: Int) -> String {
        pending += tokenizer.bytes(of: id, skipSpecial: skipSpecial)
        // The last character starts at the last non-continuation byte among the final three;
        // if it announces more bytes than have arrived, keep it for later.
        let tail = pending.indices.suffix(3).last { pending[$0] & 0xC0 != 0x80 }
        var ready = pending.count
        if let start = tail, pending.count - start < Self.sequenceLength(lead: pending[start]) {
            ready = start
        }
        let text = String(decoding: pending[..<ready], as: UTF8.self)
        pending.removeFirst(ready)
        return text
    }

    /// Whatever is held back, at the end of generation (an unfinished character shows as U+FFFD).
    package mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    private static func sequenceLength(lead: UInt8) -> Int {
        switch lead {
        case 0xC0...0xDF: return 2
        case 0xE0...0xEF: return 3
        case 0xF0...0xF7: return 4
        default: return 1
        }
    }
}

// MARK: - Helpers

/// Finds added tokens in raw text: at each position the longest one starting there, scanning
/// left to right (Hugging Face's leftmost-longest match).
private struct AddedTokenMatcher {
    enum Segment { case text(Range<Int>), token(Int) }

    /// Candidates by first UTF-8 byte, longest first.
    private let byFirstByte: [[(bytes: [UInt8], id: Int)]]

    init(_ tokens: [BPETokenizer.AddedToken]) {
        var table = [[(bytes: [UInt8], id: Int)]](repeating: [], count: 256)
        for t in tokens where !t.content.isEmpty {
            let bytes = Array(t.content.utf8)
            table[Int(bytes[0])].append((bytes, t.id))
        }
        byFirstByte = table.map { $0.sorted { $0.bytes.count > $1.bytes.count } }
    }

    /// Calls `body` with the text stretches and added tokens of `utf8`, in order.
    func split(_ utf8: [UInt8], _ body: (Segment) -> Void) {
        var start = 0, i = 0
        while i < utf8.count {
            let match = byFirstByte[Int(utf8[i])].first { candidate in
                i + candidate.bytes.count <= utf8.count
                    && utf8[i..<(i + candidate.bytes.count)].elementsEqual(candidate.bytes)
            }
            guard let match else { i += 1; continue }
            if start < i { body(.text(start..<i)) }
            body(.token(match.id))
            i += match.bytes.count
            start = i
        }
        if start < utf8.count { body(.text(start..<utf8.count)) }
    }
}

/// A binary min-heap of packed (rank, position) keys.
private struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ item: UInt64) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> UInt64? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        guard !items.isEmpty else { return top }
        items[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count && items[left] < items[smallest] { smallest = left }
            if right < items.count && items[right] < items[smallest] { smallest = right }
            guard smallest != parent else { return top }
            items.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
