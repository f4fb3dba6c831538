import Foundation
import Tensors

/// One value of a template file: the GSM-Symbolic files only hold strings, integers and booleans.
package enum TemplateFileValue: Equatable, Sendable {
    case string(String)
    case integer(Int)
    case boolean(Bool)
}

/// A file of the GSM-Symbolic template set read as the subset of TOML those files use:
/// top-level `key = value` lines, `#` comments, basic (`"..."`) and literal (`'...'`) strings,
/// their multi-line forms (`"""` and `'''`, first newline after the opening quotes dropped),
/// the basic-string escapes, integers and booleans. Anything else (tables, arrays, floats,
/// dates, dotted keys) is refused with a `TemplateFileError` naming the file and the line:
/// better a clear refusal than a silently misread template.
package struct TemplateFile: Sendable {
    package let url: URL
    package let values: [String: TemplateFileValue]

    package init(contentsOf url: URL) throws {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TemplateFileError(file: url.path, line: nil, problem: "cannot be read",
                                    fix: "check the path (scripts/fetch-assets.sh fetches the templates)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TemplateFileError(file: url.path, line: nil, problem: "is not UTF-8", fix: "re-fetch the file")
        }
        try self.init(text: text, url: url)
    }

    package init(text: String, url: URL) throws {
        self.url = url
        var parser = TemplateFileParser(scalars: Array(text.unicodeScalars), path: url.path)
        values = try parser.parseDocument()
    }

    /// The string stored under `key`; a missing key or a value of another type is an error
    /// naming the file.
    package func string(_ key: String) throws -> String {
        guard let value = values[key] else { throw missing(key) }
        guard case .string(let s) = value else { throw wrongType(key, "a string") }
        return s
    }

    package func integer(_ key: String) throws -> Int {
        guard let value = values[key] else { throw missing(key) }
        guard case .integer(let i) = value else { throw wrongType(key, "an integer") }
        return i
    }

    package func boolean(_ key: String) -> Bool? {
        if case .boolean(let b)? = values[key] { return b }
        return nil
    }

    private func missing(_ key: String) -> TemplateFileError {
        TemplateFileError(file: url.path, line: nil, problem: "has no key `\(key)`",
                          fix: "add it or point at a GSM-Symbolic template directory")
    }

    private func wrongType(_ key: String, _ expected: String) -> TemplateFileError {
        TemplateFileError(file: url.path, line: nil, problem: "key `\(key)` is not \(expected)",
                          fix: "correct the value")
    }
}

/// A template file that cannot be read: one line naming the file (and line), what is wrong and the fix.
package struct TemplateFileError: UserFacingError, Equatable {
    package let file: String
    package let line: Int?
    package let problem: String
    package let fix: String

    package var description: String {
        let place = line.map { "\(file):\($0)" } ?? file
        return "\(place): \(problem); \(fix)"
    }
}

/// A hand-written scanner over Unicode scalars (the files are small; clarity over speed).
private struct TemplateFileParser {
    let scalars: [Unicode.Scalar]
    let path: String
    var position = 0
    var line = 1

    init(scalars: [Unicode.Scalar], path: String) {
        self.scalars = scalars
        self.path = path
    }

    private var atEnd: Bool { position >= scalars.count }
    private var current: Unicode.Scalar? { atEnd ? nil : scalars[position] }

    private func peek(_ offset: Int) -> Unicode.Scalar? {
        position + offset < scalars.count ? scalars[position + offset] : nil
    }

    private mutating func advance() {
        if scalars[position] == "\n" { line += 1 }
        position += 1
    }

    private func error(_ problem: String, line: Int? = nil) -> TemplateFileError {
        TemplateFileError(file: path, line: line ?? self.line, problem: problem,
                          fix: "these files use only `key = \"string\"`, `\"\"\"multi-line\"\"\"`, `'literal'` and integer values")
    }

    private func starts(with text: String) -> Bool {
        var i = position
        for s in text.unicodeScalars {
            guard i < scalars.count, scalars[i] == s else { return false }
            i += 1
        }
        return true
    }

    private mutating func skipSpaces() {
        while let c = current, c == " " || c == "\t" { advance() }
    }

    /// Spaces, then an optional comment, then the end of the line (or of the file).
    private mutating func expectEndOfLine() throws {
        skipSpaces()
        if current == "#" { while let c = current, c != "\n" { advance() } }
        if current == "\r", peek(1) == "\n" { advance() }
        guard let c = current else { return }
        guard c == "\n" else { throw error("unexpected `\(c)` after the value") }
        advance()
    }

    mutating func parseDocument() throws -> [String: TemplateFileValue] {
        var values: [String: TemplateFileValue] = [:]
        while !atEnd {
            skipSpaces()
            guard let c = current else { break }
            if c == "\n" || c == "#" || c == "\r" { try expectEndOfLine(); continue }
            if c == "[" { throw error("tables (`[...]`) are not supported") }
            let keyLine = line
            let key = try parseKey()
            skipSpaces()
            guard current == "=" else { throw error("expected `=` after the key `\(key)`") }
            advance()
            skipSpaces()
            let value = try parseValue()
            guard values[key] == nil else { throw error("the key `\(key)` appears twice", line: keyLine) }
            values[key] = value
            try expectEndOfLine()
        }
        return values
    }

    private mutating func parseKey() throws -> String {
        if current == "\"" {
            if starts(with: "\"\"\"") { throw error("a multi-line string cannot be a key") }
            return try parseBasicString()
        }
        if current == "'" { return try parseLiteralString() }
        var key = ""
        while let c = current, ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c)
                || c == "_" || c == "-" {
            key.unicodeScalars.append(c)
            advance()
        }
        if current == "." { throw error("dotted keys are not supported") }
        guard !key.isEmpty else { throw error("expected a key") }
        return key
    }

    private mutating func parseValue() throws -> TemplateFileValue {
        guard let c = current else { throw error("expected a value at the end of the file") }
        if starts(with: "\"\"\"") { return .string(try parseMultilineString(quote: "\"", escapes: true)) }
        if starts(with: "'''") { return .string(try parseMultilineString(quote: "'", escapes: false)) }
        if c == "\"" { return .string(try parseBasicString()) }
        if c == "'" { return .string(try parseLiteralString()) }
        if starts(with: "true") { position += 4; return .boolean(true) }
        if starts(with: "false") { position += 5; return .boolean(false) }
        if c == "+" || c == "-" || ("0"..."9").contains(c) { return .integer(try parseInteger()) }
        if c == "[" { throw error("arrays are not supported") }
        if c == "{" { throw error("inline tables are not supported") }
        throw error("unsupported value starting with `\(c)`")
    }

    private mutating func parseInteger() throws -> Int {
        var text = ""
        while let c = current, c == "+" || c == "-" || c == "_" || ("0"..."9").contains(c)
                || c == "." || c == "e" || c == "E" || c == ":" {
            text.unicodeScalars.append(c)
            advance()
        }
        if text.contains(".") || text.contains("e") || text.contains("E") { throw error("floats are not supported") }
        if text.contains(":") || text.dropFirst().contains("-") { throw error("dates and times are not supported") }
        let digits = text.replacingOccurrences(of: "_", with: "")
        guard !text.hasPrefix("_"), !text.hasSuffix("_"), !text.contains("__"), let value = Int(digits) else {
            throw error("`\(text)` is not an integer")
        }
        return value
    }

    private mutating func parseLiteralString() throws -> String {
        advance()  // opening '
        var out = ""
        while let c = current, c != "'" {
            guard c != "\n" else { throw error("unterminated string") }
            out.unicodeScalars.append(c)
            advance()
        }
        guard current == "'" else { throw error("unterminated string") }
        advance()
        return out
    }

    private mutating func parseBasicString() throws -> String {
        advance()  // opening "
        var out = ""
        while let c = current, c != "\"" {
            guard c != "\n" else { throw error("unterminated string") }
            if c == "\\" { out.unicodeScalars.append(try parseEscape()) } else { out.unicodeScalars.append(c); advance() }
        }
        guard current == "\"" else { throw error("unterminated string") }
        advance()
        return out
    }

    /// TOML: a newline right after the opening quotes is dropped; the closing quotes may be
    /// preceded by up to two more quotes that belong to the content. Basic strings (`"""`) take
    /// escapes and line-ending backslashes; literal ones (`'''`) take every character as it is.
    private mutating func parseMultilineString(quote: Unicode.Scalar, escapes: Bool) throws -> String {
        let startLine = line
        let closing = String(repeating: Character(quote), count: 3)
        position += 3
        skipFirstNewline()
        var out = ""
        while true {
            guard let c = current else { throw error("unterminated multi-line string", line: startLine) }
            if starts(with: closing) {
                var extra = 0
                while peek(3 + extra) == quote && extra < 2 { extra += 1 }
                for _ in 0..<extra { out.unicodeScalars.append(quote) }
                position += 3 + extra
                return out
            }
            if escapes && c == "\\" {
                if isLineEndingBackslash() {
                    advance()
                    while let w = current, w == " " || w == "\t" || w == "\n" || w == "\r" { advance() }
                } else {
                    out.unicodeScalars.append(try parseEscape())
                }
                continue
            }
            if c == "\r", peek(1) == "\n" { advance(); continue }
            out.unicodeScalars.append(c)
            advance()
        }
    }

    private mutating func skipFirstNewline() {
        if current == "\n" { advance() } else if current == "\r", peek(1) == "\n" { advance(); advance() }
    }

    /// A backslash followed by only whitespace up to the end of its line.
    private func isLineEndingBackslash() -> Bool {
        var i = position + 1
        while i < scalars.count, scalars[i] == " " || scalars[i] == "\t" || scalars[i] == "\r" { i += 1 }
        return i < scalars.count && scalars[i] == "\n"
    }

    private mutating func parseEscape() throws -> Unicode.Scalar {
        advance()  // backslash
        guard let c = current else { throw error("a backslash ends the file") }
        advance()
        switch c {
        case "n": return "\n"
        case "t": return "\t"
        case "r": return "\r"
        case "b": return "\u{08}"
        case "f": return "\u{0C}"
        case "e": return "\u{1B}"
        case "\"": return "\""
        case "\\": return "\\"
        case "u", "U":
            let count = c == "u" ? 4 : 8
            var hex = ""
            for _ in 0..<count {
                guard let h = current, h.properties.isASCIIHexDigit else { throw error("`\\\(c)` needs \(count) hex digits") }
                hex.unicodeScalars.append(h)
                advance()
            }
            guard let code = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(code) else {
                throw error("`\\\(c)\(hex)` is not a Unicode scalar")
            }
            return scalar
        default:
            throw error("unknown escape `\\\(c)`")
        }
    }
}
