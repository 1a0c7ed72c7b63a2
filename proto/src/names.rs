//! The grammar of task type and domain names, shared by the server (which
//! enforces it) and the agent SDK (which checks it before connecting).

/// The longest name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a task type or domain name: 1 to 128 characters of lowercase ASCII
/// letters, digits, `_`, `-` or `.`, starting with a letter.
///
/// `what` names the field in the error, e.g. `"task type"`. The error says
/// what is wrong and how to fix it.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "{what} is empty: give a name such as \"welcome_email\""
        ));
    }
    let grammar = "use 1 to 128 characters of lowercase letters, digits, '_', '-' or '.', starting with a letter";
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} '{}…' is {} characters long: {grammar}",
            &name[..32],
            name.len()
        ));
    }
    let starts_with_letter = name.as_bytes()[0].is_ascii_lowercase();
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
    if starts_with_letter && valid_chars {
        Ok(())
    } else {
        Err(format!(
            "{what} '{}' is not a valid name: {grammar}",
            name.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn accepts_the_guides_names() {
        for name in [
            "welcome_email",
            "billing",
            "system_maintenance",
            "v2.report-export",
        ] {
            assert_eq!(check_name("task type", name), Ok(()));
        }
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        let err = check_name("task type", "Send Email").unwrap_err();
        assert!(err.contains("'Send Email' is not a valid name"), "{err}");
        assert!(
            check_name("domain", "")
                .unwrap_err()
                .starts_with("domain is empty")
        );
        assert!(check_name("task type", "1abc").is_err());
        let long = "a".repeat(129);
        assert!(
            check_name("task type", &long)
                .unwrap_err()
                .contains("129 characters")
        );
    }
}
