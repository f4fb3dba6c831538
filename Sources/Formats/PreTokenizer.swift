/// How text is cut into pieces before BPE merges run inside each piece.
///
/// Each kind is one of the regular expressions Hugging Face tokenizers use, matched here by a
/// hand-written scanner over Unicode scalars (Swift's Regex is far too slow for this). The scanner
/// reproduces the regex engine exactly, including its first-alternative-wins order and the
/// backtracking of `\s+(?!\S)`. Character classes as the Oniguruma engine behind `tokenizers`
/// defines them:
/// - `\p{L}`: general category L (Lu, Ll, Lt, Lm, Lo); `\p{N}`: N (Nd, Nl, No).
/// - `\s`: U+0009–U+000D, U+0085 and categories Zs, Zl, Zp, which is exactly Unicode's White_Space
///   property (`Unicode.Scalar.Properties.isWhitespace`). Not Python's `str.isspace`, which also
///   counts U+001C–U+001F.
package enum PreTokenizer: Equatable, Sendable {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    /// `individualDigits` first isolates every `\p{N}` scalar (HF's `Digits(individual_digits)`),
    /// and the regex then runs inside each remaining stretch on its own.
    case gpt2(individualDigits: Bool)
    /// Qwen2 (see `splitPatterns` for the regex): contractions in any case, a word may take one
    /// leading non-newline symbol, one digit per piece, newlines kept with what precedes them.
    case qwen2
    /// Llama 3: as Qwen2 but with `\p{N}{1,3}`, digits in groups of up to three.
    case llama3
    /// One piece per text stretch (a ByteLevel pre-tokenizer with `use_regex: false` alone).
    case whole

    /// The kinds named by GGUF `tokenizer.ggml.pre` that this engine knows.
    ///
    /// transformers builds a GGUF's tokenizer from the file's architecture and ignores this
    /// name: "llama" files (SmolLM2) get the plain GPT-2 regex, "qwen2"/"qwen3" files the Qwen2
    /// regex. llama.cpp's "smollm" additionally isolates digits; SmolLM2's merges hold no digit,
    /// so that never changes an id, and we follow transformers.
    static let ggufNames: [String: PreTokenizer] = [
        "gpt-2": .gpt2(individualDigits: false),
        "gpt2": .gpt2(individualDigits: false),
        "smollm": .gpt2(individualDigits: false),
        "qwen2": .qwen2,
    ]

    /// The regexes a tokenizer.json `Split` pre-tokenizer may carry, spelled as in the files.
    static let splitPatterns: [String: PreTokenizer] = [
        #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#: .gpt2(individualDigits: false),
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: .qwen2,
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: .llama3,
    ]

    /// Cuts `text` into consecutive pieces covering all of it, as ranges of scalar offsets.
    func split(_ text: [Unicode.Scalar]) -> [Range<Int>] {
        let classes = text.map(ScalarClass.init)
        var pieces: [Range<Int>] = []
        func scan(_ stretch: Range<Int>) {
            let scanner = Scanner(text: text, classes: classes, end: stretch.upperBound)
            var i = stretch.lowerBound
            while i < stretch.upperBound {
                let next: Int
                switch self {
                case .gpt2: next = scanner.gpt2Piece(at: i)
                case .qwen2: next = scanner.qwenPiece(at: i, maxDigits: 1)
                case .llama3: next = scanner.qwenPiece(at: i, maxDigits: 3)
                case .whole: next = stretch.upperBound
                }
                pieces.append(i..<next)
                i = next
            }
        }
        guard case .gpt2(individualDigits: true) = self else {
            scan(0..<text.count)
            return pieces
        }
        // Each number scalar stands alone; the regex sees only the stretches between them.
        var start = 0
        for i in text.indices where classes[i] == .number {
            if start < i { scan(start..<i) }
            pieces.append(i..<i + 1)
            start = i + 1
        }
        if start < text.count { scan(start..<text.count) }
        return pieces
    }
}

/// The four classes every pattern is written in terms of.
enum ScalarClass: UInt8 {
    case letter, number, whitespace, other

    init(_ s: Unicode.Scalar) {
        // Fast path: most text is ASCII, and the property lookup is not free.
        if s.isASCII { self = ScalarClass.ascii[Int(s.value)]; return }
        if s.properties.isWhitespace { self = .whitespace; return }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            self = .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            self = .number
        default:
            self = .other
        }
    }

    private static let ascii: [ScalarClass] = (0..<128).map { v in
        switch UInt8(v) {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"): return .letter
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return .number
        case 0x09...0x0D, 0x20: return .whitespace
        default: return .other
        }
    }
}

/// One regex match at a time: each method returns where the piece starting at `i` ends.
/// Nothing past `end` is looked at, as if the text stopped there.
private struct Scanner {
    let text: [Unicode.Scalar]
    let classes: [ScalarClass]
    let end: Int

    private func isNewline(_ i: Int) -> Bool { text[i] == "\n" || text[i] == "\r" }

    /// The end of the run of `class` starting at `i`.
    private func run(of cls: ScalarClass, from i: Int) -> Int {
        var j = i
        while j < end && classes[j] == cls { j += 1 }
        return j
    }

    /// Length of `'s|'t|'re|'ve|'m|'ll|'d` at `i`, or nil.
    private func contraction(at i: Int, caseInsensitive: Bool) -> Int? {
        guard text[i] == "'" else { return nil }
        func letter(_ k: Int) -> Unicode.Scalar? {
            guard k < end else { return nil }
            let s = text[k]
            guard caseInsensitive else { return s }
            // Unicode case folding, as Oniguruma's (?i) applies it: besides ASCII, only the
            // long s "ſ" folds onto one of these letters.
            if s == "\u{17F}" { return "s" }
            return ("A"..."Z").contains(s) ? Unicode.Scalar(s.value + 32)! : s
        }
        switch (letter(i + 1), letter(i + 2)) {
        case ("s", _), ("t", _), ("m", _), ("d", _): return 2
        case ("r", "e"), ("v", "e"), ("l", "l"): return 3
        default: return nil
        }
    }

    /// `\s+(?!\S)|\s+` at a whitespace scalar: a run of spaces gives its last one to the word
    /// after it (so " the" stays one token), unless the run is that single scalar.
    private func whitespacePiece(at i: Int) -> Int {
        let runEnd = run(of: .whitespace, from: i)
        return runEnd == end || runEnd - i == 1 ? runEnd : runEnd - 1
    }

    func gpt2Piece(at i: Int) -> Int {
        if let n = contraction(at: i, caseInsensitive: false) { return i + n }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: one space may lead any non-space run.
        let start = text[i] == " " && i + 1 < end && classes[i + 1] != .whitespace ? i + 1 : i
        let cls = classes[start]
        return cls == .whitespace ? whitespacePiece(at: i) : run(of: cls, from: start)
    }

    func qwenPiece(at i: Int, maxDigits: Int) -> Int {
        if let n = contraction(at: i, caseInsensitive: true) { return i + n }
        let cls = classes[i]
        // `[^\r\n\p{L}\p{N}]?\p{L}+`: any one non-newline, non-number scalar may lead a word.
        if cls == .letter { return run(of: .letter, from: i) }
        if cls != .number && !isNewline(i) && i + 1 < end && classes[i + 1] == .letter {
            return run(of: .letter, from: i + 1)
        }
        // `\p{N}{1,max}`
        if cls == .number { return min(run(of: .number, from: i), i + maxDigits) }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let start = text[i] == " " && i + 1 < end && classes[i + 1] == .other ? i + 1 : i
        if classes[start] == .other {
            var j = run(of: .other, from: start)
            while j < end && isNewline(j) { j += 1 }
            return j
        }
        // `\s*[\r\n]+`: the whitespace run up to and including its last newline.
        let runEnd = run(of: .whitespace, from: i)
        if let lastNewline = (i..<runEnd).last(where: isNewline) { return lastNewline + 1 }
        return whitespacePiece(at: i)
    }
}

extension PreTokenizer {
    /// The kind a GGUF `tokenizer.ggml.pre` name stands for. A file without the key predates it
    /// and is GPT-2 style.
    static func gguf(name: String?, path: String) throws -> PreTokenizer {
        guard let name else { return .gpt2(individualDigits: false) }
        guard let kind = ggufNames[name] else {
            throw FormatError(path, "tokenizer.ggml.pre \"\(name)\" is not supported (known: \(ggufNames.keys.sorted().joined(separator: ", ")))")
        }
        return kind
    }

    /// The kind a tokenizer.json `pre_tokenizer` section describes, and its ByteLevel
    /// `add_prefix_space` flag. Understood shapes: `ByteLevel`; `Sequence` of an optional
    /// `Digits(individual_digits: true)` or `Split` (a known regex, Isolated) then `ByteLevel`.
    static func tokenizerJSON(_ section: Any?, path: String) throws -> (PreTokenizer, addPrefixSpace: Bool) {
        func fail(_ why: String) -> FormatError {
            FormatError(path, "pre_tokenizer: \(why); rqat reads byte-level BPE tokenizers (GPT-2, SmolLM2, Qwen2, Llama 3 style)")
        }
        guard let section = section as? [String: Any] else { throw fail("missing") }
        let steps = section["type"] as? String == "Sequence" ? section["pretokenizers"] as? [[String: Any]] ?? [] : [section]
        guard let byteLevel = steps.last, byteLevel["type"] as? String == "ByteLevel" else {
            throw fail("the last step is not ByteLevel")
        }
        // Hugging Face's defaults when a flag is absent.
        let useRegex = byteLevel["use_regex"] as? Bool ?? true
        let addPrefixSpace = byteLevel["add_prefix_space"] as? Bool ?? true
        switch steps.count {
        case 1:
            return (useRegex ? .gpt2(individualDigits: false) : .whole, addPrefixSpace)
        case 2 where steps[0]["type"] as? String == "Digits" && useRegex:
            guard steps[0]["individual_digits"] as? Bool == true else { throw fail("Digits without individual_digits") }
            return (.gpt2(individualDigits: true), addPrefixSpace)
        case 2 where steps[0]["type"] as? String == "Split" && !useRegex:
            let split = steps[0]
            guard let regex = (split["pattern"] as? [String: Any])?["Regex"] as? String,
                  let kind = splitPatterns[regex] else {
                throw fail("unknown Split pattern \(split["pattern"].map { "\($0)" } ?? "nil")")
            }
            guard split["behavior"] as? String == "Isolated", split["invert"] as? Bool != true else {
                throw fail("Split must be Isolated and not inverted")
            }
            return (kind, addPrefixSpace)
        default:
            throw fail("unsupported sequence [\(steps.map { $0["type"] as? String ?? "?" }.joined(separator: ", "))]")
        }
    }
}
