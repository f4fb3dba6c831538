import Foundation

/// Which flexible-extraction rule found the answer, in priority order.
package enum AnswerRule: String, Codable, Sendable {
    case boxed, hashes, answerIs = "answer-is", lastNumber = "last-number"
}

/// The two verdicts on one completion, each with the answer it extracted.
package struct AnswerVerdict: Codable, Sendable, Equatable {
    /// lm-evaluation-harness gsm8k strict-match: the first `#### N`, normalised; nil if none.
    package var strictAnswer: String?
    package var strictCorrect: Bool
    /// The first rule of `AnswerRule` that finds something, and what it found (normalised).
    package var flexibleAnswer: String?
    package var flexibleRule: AnswerRule?
    package var flexibleCorrect: Bool

    package init(strictAnswer: String?, strictCorrect: Bool, flexibleAnswer: String?, flexibleRule: AnswerRule?,
                 flexibleCorrect: Bool) {
        self.strictAnswer = strictAnswer
        self.strictCorrect = strictCorrect
        self.flexibleAnswer = flexibleAnswer
        self.flexibleRule = flexibleRule
        self.flexibleCorrect = flexibleCorrect
    }
}

/// Extracts final answers from model completions and compares them with gold answers.
///
/// *Strict* is lm-evaluation-harness's gsm8k `strict-match` on the raw text: the first match of
/// `#### (\-?[0-9\.\,]+)` (so `#### −5` with a unicode minus, or `####5`, finds nothing, as there).
///
/// *Flexible* maps U+2212 to `-` and takes the first rule that finds an answer:
/// 1. `boxed`: the last `\boxed{...}` with balanced braces (a truncated one is ignored); inside it
///    the part after the last `=`, else the whole, if it is a number, else its only number, else
///    the text itself;
/// 2. `hashes`: the first number on the rest of the line after the first `####` that has one;
/// 3. `answer-is`: the first number after the last "answer is" / "answer:" (so also "the answer
///    is", "final answer:", "The final answer is"; case-insensitive) that has one on its line;
/// 4. `last-number`: lm-evaluation-harness's `flexible-extract` regex
///    `(-?[$0-9.,]{2,})|(-?[0-9]+)`, the last match that is a number (lm-eval takes the last
///    match even when it is only punctuation such as `.,`; skipping those can only find more).
///
/// Answers compare as exact rationals when both are numbers (`normalize`), else as trimmed text.
package enum AnswerChecker {
    package static func check(completion: String, gold: String) -> AnswerVerdict {
        let strict = strictExtraction(completion).map { normalize($0) ?? $0 }
        let flexible = flexibleExtraction(completion)
        return AnswerVerdict(strictAnswer: strict, strictCorrect: strict.map { matches($0, gold: gold) } ?? false,
                             flexibleAnswer: flexible?.answer, flexibleRule: flexible?.rule,
                             flexibleCorrect: flexible.map { matches($0.answer, gold: gold) } ?? false)
    }

    /// Whether an extracted answer equals the gold one: as numbers when both are, else as text.
    package static func matches(_ answer: String, gold: String) -> Bool {
        if let a = normalize(answer), let g = normalize(gold) { return a == g }
        return answer.trimmingCharacters(in: .whitespacesAndNewlines) == gold.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: - Strict

    static let strictPattern = regex(#"#### (\-?[0-9\.\,]+)"#)

    /// The raw capture of lm-eval's strict-match regex (first match), before normalisation.
    package static func strictExtraction(_ text: String) -> String? {
        firstMatch(strictPattern, in: text).flatMap { $0[1] }
    }

    // MARK: - Flexible

    package static func flexibleExtraction(_ completion: String) -> (answer: String, rule: AnswerRule)? {
        let text = completion.replacingOccurrences(of: "\u{2212}", with: "-")
        if let content = lastBoxedContent(text), let answer = boxedAnswer(content) { return (answer, .boxed) }
        for match in allMatches(hashesPattern, in: text) {
            if let rest = match[1], let number = firstNumber(in: rest) { return (number, .hashes) }
        }
        for match in allMatches(answerIsPattern, in: text).reversed() {
            if let rest = match[1], let number = firstNumber(in: rest) { return (number, .answerIs) }
        }
        for match in allMatches(lastNumberPattern, in: text).reversed() {
            if let found = match[0], let number = normalize(found) { return (number, .lastNumber) }
        }
        return nil
    }

    /// What follows `####` (or "answer is" / "answer:") up to the end of its line.
    static let hashesPattern = regex(#"####([^\n]*)"#)
    static let answerIsPattern = regex(#"\banswer[\s*_]*(?:is\b|:)([^\n]*)"#, caseInsensitive: true)
    static let lastNumberPattern = regex(#"(-?[$0-9.,]{2,})|(-?[0-9]+)"#)
    /// A number as written in prose or LaTeX: `\frac{a}{b}`, `a/b`, `$1,234.50`, `-7`, `.5`.
    static let numberPattern = regex(
        #"-?\s*\\[dt]?frac\{[^{}]*\}\{[^{}]*\}|(?:\\?\$\s*)?-?\s*(?:\\?\$\s*)?(?:[0-9][0-9,]*(?:\.[0-9]+)?|\.[0-9]+)(?:\s*/\s*[0-9]+)?"#)

    /// The first number in `text`, normalised.
    static func firstNumber(in text: String) -> String? {
        allMatches(numberPattern, in: text).lazy.compactMap { $0[0].flatMap(normalize) }.first
    }

    /// The content of the last complete `\boxed{...}` (braces balanced), nil if there is none.
    static func lastBoxedContent(_ text: String) -> String? {
        let chars = Array(text.unicodeScalars)
        let marker = Array("\\boxed".unicodeScalars)
        var found: String?
        var i = 0
        while i + marker.count <= chars.count {
            guard chars[i..<(i + marker.count)].elementsEqual(marker) else { i += 1; continue }
            var j = i + marker.count
            while j < chars.count && chars[j] == " " { j += 1 }
            guard j < chars.count, chars[j] == "{" else { i += marker.count; continue }
            var depth = 0, end: Int?
            for e in j..<chars.count {
                if chars[e] == "{" { depth += 1 } else if chars[e] == "}" { depth -= 1; if depth == 0 { end = e; break } }
            }
            guard let end else { break }   // unclosed: the text was cut; an earlier box stands
            var content = String.UnicodeScalarView()
            content.append(contentsOf: chars[(j + 1)..<end])
            if !String(content).trimmingCharacters(in: .whitespaces).isEmpty { found = String(content) }
            i = j + 1   // boxes may nest; the last one opened wins only if it is last in the text
        }
        return found
    }

    /// A boxed content as an answer: `x = 5` -> 5; `18 \text{ dollars}` -> 18; else its text.
    static func boxedAnswer(_ content: String) -> String? {
        var body = content
        if let eq = body.range(of: "=", options: .backwards) { body = String(body[eq.upperBound...]) }
        if let n = normalize(body) { return n }
        let numbers = allMatches(numberPattern, in: body).compactMap { $0[0].flatMap(normalize) }
        if numbers.count == 1 { return numbers[0] }
        let text = stripLatexText(body).trimmingCharacters(in: .whitespaces)
        return text.isEmpty ? nil : text
    }

    // MARK: - Normalisation

    /// The canonical form of a number as written: thousands separators, `$` (also `\$`), a
    /// trailing `.` or `%` (percentages compare as the bare number, as GSM8K's gold answers are
    /// written), U+2212 and LaTeX spacing (`\,`, `\!`, `{,}`) removed; `\frac`, `\dfrac`,
    /// `\tfrac` and `a/b` as exact fractions. The form is unique per rational: an integer or a
    /// terminating decimal without trailing zeros (`0.5`, `12.5`, `-3`) where one exists, else a
    /// reduced `p/q` (`1/3`). nil if `s` is not a number (or a fraction overflows 64 bits).
    package static func normalize(_ s: String) -> String? {
        var t = stripLatexText(s.replacingOccurrences(of: "\u{2212}", with: "-"))
        for junk in ["\\$", "$", "\\!", "\\,", "{,}", "\\left", "\\right", "\\%", ","] {
            t = t.replacingOccurrences(of: junk, with: "")
        }
        // Spaces may sit after a sign or around a fraction bar, not between two numbers.
        guard firstMatch(spaceBetweenNumbers, in: t) == nil else { return nil }
        t = t.filter { !$0.isWhitespace }
        while t.hasPrefix("{") && t.hasSuffix("}") && outerBracesEncloseAll(t) { t = String(t.dropFirst().dropLast()) }
        while let last = t.last, last == "." || last == "%" { t.removeLast() }
        if t.hasPrefix("+") { t.removeFirst() }
        if let m = firstMatch(latexFraction, in: t), m[0] == t, let a = m[2], let b = m[3] {
            return fraction(a, b, negative: m[1] == "-")
        }
        if let m = firstMatch(slashFraction, in: t), m[0] == t, let a = m[1], let b = m[2] {
            return fraction(a, b, negative: false)
        }
        return Numeral(t)?.canonical
    }

    static let spaceBetweenNumbers = regex(#"[0-9.]\s+[0-9.]"#)
    static let latexFraction = regex(#"(-?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}"#)
    static let slashFraction = regex(#"(-?[0-9.]+)/(-?[0-9.]+)"#)

    /// Whether the first `{` closes at the last character: `{12}` yes, `{1}{2}` no.
    static func outerBracesEncloseAll(_ t: String) -> Bool {
        var depth = 0
        for (i, ch) in t.enumerated() {
            if ch == "{" { depth += 1 } else if ch == "}" { depth -= 1 }
            if depth == 0 { return i == t.count - 1 }
        }
        return false
    }

    /// `\text{...}`, `\mathrm{...}`, `\textbf{...}`, `\mbox{...}` replaced by their contents.
    static func stripLatexText(_ s: String) -> String {
        var t = s
        for command in ["\\text", "\\textbf", "\\mathrm", "\\mbox", "\\mathbf"] {
            while let r = t.range(of: command + "{") {
                guard let close = t[r.upperBound...].firstIndex(of: "}") else { break }
                t = String(t[..<r.lowerBound]) + String(t[r.upperBound..<close]) + String(t[t.index(after: close)...])
            }
        }
        return t
    }

    /// a / b, each a decimal, as the canonical form of the exact rational.
    static func fraction(_ a: String, _ b: String, negative: Bool) -> String? {
        guard let x = Numeral(a)?.rational, let y = Numeral(b)?.rational, y.numerator != 0 else { return nil }
        guard let n = multiplied(x.numerator, y.denominator), let d = multiplied(x.denominator, y.numerator) else { return nil }
        return Rational(numerator: negative ? -n : n, denominator: d)?.canonical
    }

    static func multiplied(_ a: Int64, _ b: Int64) -> Int64? {
        let (r, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? nil : r
    }

    /// A decimal numeral: sign, integer digits, fraction digits (any length; no arithmetic).
    struct Numeral {
        var negative: Bool, integer: Substring, fraction: Substring

        init?(_ text: String) {
            var t = Substring(text)
            negative = t.hasPrefix("-")
            if negative { t = t.dropFirst() }
            let parts = t.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
            integer = parts[0]
            fraction = parts.count > 1 ? parts[1] : ""
            guard !(integer.isEmpty && fraction.isEmpty), (integer + fraction).allSatisfy({ $0.isASCII && $0.isNumber })
            else { return nil }
            integer = integer.drop { $0 == "0" }
            while fraction.last == "0" { fraction = fraction.dropLast() }
        }

        var canonical: String {
            let body = (integer.isEmpty ? "0" : String(integer)) + (fraction.isEmpty ? "" : "." + String(fraction))
            return negative && body != "0" ? "-" + body : body
        }

        /// nil beyond 18 significant digits (64-bit).
        var rational: Rational? {
            let digits = integer + fraction
            guard digits.count <= 18 else { return nil }
            let n = digits.isEmpty ? 0 : Int64(digits)!
            var d: Int64 = 1
            for _ in 0..<fraction.count { d *= 10 }
            return Rational(numerator: negative ? -n : n, denominator: d)
        }
    }

    /// A reduced fraction with a positive denominator.
    struct Rational {
        var numerator: Int64, denominator: Int64

        init?(numerator n: Int64, denominator d: Int64) {
            guard d != 0, n != .min, d != .min else { return nil }
            var a = abs(n), b = abs(d)
            while b != 0 { (a, b) = (b, a % b) }
            let g = max(a, 1)
            numerator = (d < 0 ? -n : n) / g
            denominator = abs(d) / g
        }

        /// A terminating decimal when the denominator is 2^a 5^b, else "p/q".
        var canonical: String {
            var rest = denominator, twos = 0, fives = 0
            while rest % 2 == 0 { rest /= 2; twos += 1 }
            while rest % 5 == 0 { rest /= 5; fives += 1 }
            let digits = max(twos, fives)
            guard rest == 1, digits <= 18 else { return "\(numerator)/\(denominator)" }
            var scale: Int64 = 1
            for _ in 0..<digits { scale *= 10 }
            guard let scaled = AnswerChecker.multiplied(abs(numerator), scale / denominator) else { return "\(numerator)/\(denominator)" }
            let text = String(scaled), padded = String(repeating: "0", count: max(0, digits + 1 - text.count)) + text
            let cut = padded.index(padded.endIndex, offsetBy: -digits)
            let sign = numerator < 0 ? "-" : ""
            return Numeral(sign + String(padded[..<cut]) + "." + String(padded[cut...]))!.canonical
        }
    }

    // MARK: - Regular expressions

    static func regex(_ pattern: String, caseInsensitive: Bool = false) -> NSRegularExpression {
        try! NSRegularExpression(pattern: pattern, options: caseInsensitive ? [.caseInsensitive] : [])
    }

    /// Every match of `regex` in `text`: the whole match and each group (nil if it took no part).
    static func allMatches(_ regex: NSRegularExpression, in text: String) -> [[String?]] {
        let ns = text as NSString
        return regex.matches(in: text, range: NSRange(location: 0, length: ns.length)).map { m in
            (0..<m.numberOfRanges).map { g in
                let r = m.range(at: g)
                return r.location == NSNotFound ? nil : ns.substring(with: r)
            }
        }
    }

    static func firstMatch(_ regex: NSRegularExpression, in text: String) -> [String?]? {
        allMatches(regex, in: text).first
    }
}
