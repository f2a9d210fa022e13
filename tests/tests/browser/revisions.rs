//! Edits and deletions on the demo page: made in place by the author, shown
//! in place in every other page, and shown as they now are by a page opened
//! after them.

use serde_json::json;

use crate::crier::Crier;
use crate::new_channel;
use crate::page::ChatPage;
use crate::webdriver::Driver;

/// Clicks `label` (Edit, Delete) on message `id` in `page`.
fn click(page: &ChatPage, id: u64, label: &str) {
    let clicked = page.run(
        "const item = document.querySelector(`#messages li[data-id=\"${arguments[0]}\"]`);
         const button = [...(item?.querySelectorAll('.actions button') ?? [])]
             .find((b) => b.textContent === arguments[1]);
         button?.click();
         return Boolean(button);",
        json!([id, label]),
    );
    assert_eq!(clicked, true, "message {id} has a {label} button");
}

/// Types `text` into the open editor of message `id` and saves it.
fn save_edit(page: &ChatPage, id: u64, text: &str) {
    let saved = page.run(
        "const editor = document.querySelector(`#messages li[data-id=\"${arguments[0]}\"] form.editor`);
         if (!editor) return false;
         editor.elements.text.value = arguments[1];
         editor.requestSubmit();
         return true;",
        json!([id, text]),
    );
    assert_eq!(saved, true, "message {id} is being edited");
}

fn is_marked_edited(page: &ChatPage, id: u64) -> bool {
    let marked = page.run(
        "return Boolean(document.querySelector(`#messages li[data-id=\"${arguments[0]}\"] .edited`));",
        json!([id]),
    );
    marked == true
}

#[test]
fn an_edit_and_a_deletion_show_in_place_and_in_a_page_opened_after_them() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let channel = new_channel();
    let url = crier.page_url(Some(channel));
    let ann = ChatPage::open(&driver, &url);
    let bob = ChatPage::open(&driver, &url);
    ann.send("ann", "helo");
    bob.wait_for_text("helo");
    assert_eq!(
        bob.count("#messages .actions"),
        0,
        "no buttons on others' messages"
    );

    click(&ann, 1, "Edit");
    save_edit(&ann, 1, "hello");
    for page in [&ann, &bob] {
        page.wait_for_text("hello");
        assert_eq!(page.count("#messages li[data-id]"), 1, "changed in place");
        assert!(is_marked_edited(page, 1), "marked edited");
    }

    bob.close();
    click(&ann, 1, "Delete");
    ann.wait_for_text("message deleted");
    let bob = ChatPage::open(&driver, &url);
    bob.wait_for_text("message deleted");
    assert_eq!(
        bob.texts(),
        ["message deleted"],
        "a page opened later shows it deleted"
    );
}
