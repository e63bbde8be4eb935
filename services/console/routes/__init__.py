"""The console's routes, one router per page or concern, each made from the console's parts (``parts.Parts``);
``web.create_console`` puts them together behind the doors (``signin.guard``)."""
